/** The "Choose text… / Choose ids…" row shared by the calibration and distillation cards. */
import { useRef } from 'react';

/**
 * A button that opens a hidden file input, the chosen file's name and size beside it, and the read:
 * the file's text goes to `onFile`. The input is cleared after each pick so the same file can be
 * chosen again after an edit.
 */
export function TextFilePicker(props: {
  /** Test id prefix: `${testId}`, `${testId}-name`, `${testId}-input`. */
  testId: string;
  /** What the file holds: plain text (tokenized by the page) or token ids. */
  kind: 'text' | 'ids';
  file: { name: string; text: string } | null | undefined;
  /** Shown when no file is chosen. */
  noFileLabel?: string;
  onFile: (name: string, text: string) => void;
}) {
  const input = useRef<HTMLInputElement>(null);
  return (
    <div className="buttons left">
      <button type="button" data-testid={props.testId} onClick={() => input.current?.click()}>
        {props.kind === 'text' ? 'Choose text…' : 'Choose ids…'}
      </button>
      <span className="muted small" data-testid={`${props.testId}-name`}>
        {props.file
          ? `${props.file.name} · ${props.file.text.length.toLocaleString('en-US')} chars`
          : (props.noFileLabel ?? 'no file')}
      </span>
      <input
        ref={input}
        type="file"
        accept=".txt,text/plain"
        hidden
        data-testid={`${props.testId}-input`}
        onChange={async (e) => {
          const f = e.target.files?.[0];
          e.target.value = '';
          if (f) props.onFile(f.name, await f.text());
        }}
      />
    </div>
  );
}
