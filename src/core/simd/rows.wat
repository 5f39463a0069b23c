;; The quantizers' loops for channels along the rows (int8 per row or per tensor, int4 blocks along the
;; rows of a [C, K] table): ranges and codes block by block along each row, with the error sums fused
;; into the encode as sums.wat does for the column path. Source of truth for rows-wasm.ts (regenerate
;; with `npm run build:wasm`; a test checks the two agree).
;;
;; The row path rounds as the scalar JavaScript it replaces, bit for bit: round(x · inv) with x · inv a
;; float64 product (inv is a float64, 1/scale) and Math.round's ties toward +∞, then + z, clamped;
;; the column path (kernels.wat) rounds in float32 and so cannot be reused here without changing
;; exported bytes. A module of its own, importing kernels.wat's memory, so kernels.wat stays under the
;; 4 KB old Chrome compiled synchronously on the main thread.
(module
  (import "env" "memory" (memory 1))

  ;; For a row-major [rows, cols] matrix cut along each row into blocks of `block` columns (the last
  ;; one of a row shorter): lo[r · B + b] = min(lo[r · B + b], x in block b of row r), hi likewise with
  ;; max, B = ceil(cols / block); NaN ignored, and a value only replaces a strictly smaller (larger)
  ;; one, as the scalar `if (v < lo) lo = v; else if (v > hi) hi = v` does (so −0 never replaces 0).
  (func (export "row_block_ranges")
    (param $x i32) (param $rows i32) (param $cols i32) (param $block i32) (param $lo i32) (param $hi i32)
    (local $r i32) (local $c i32) (local $end i32) (local $vec_end i32) (local $v v128) (local $l v128)
    (local $h v128) (local $s f32) (local $sl f32) (local $sh f32) (local $row i32)
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $c (i32.const 0))
        (block $blocks_done
          (loop $blocks_loop
            (br_if $blocks_done (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $end (i32.add (local.get $c) (local.get $block)))
            (if (i32.gt_u (local.get $end) (local.get $cols)) (then (local.set $end (local.get $cols))))
            (local.set $vec_end (i32.sub (local.get $end) (i32.and (i32.sub (local.get $end) (local.get $c)) (i32.const 3))))
            (local.set $sl (f32.load (local.get $lo)))
            (local.set $sh (f32.load (local.get $hi)))
            (local.set $l (f32x4.splat (local.get $sl)))
            (local.set $h (f32x4.splat (local.get $sh)))
            (block $vec_done
              (loop $vec_loop
                (br_if $vec_done (i32.ge_u (local.get $c) (local.get $vec_end)))
                (local.set $v (v128.load (i32.add (local.get $x) (i32.shl (local.get $c) (i32.const 2)))))
                (local.set $l (f32x4.pmin (local.get $l) (local.get $v)))
                (local.set $h (f32x4.pmax (local.get $h) (local.get $v)))
                (local.set $c (i32.add (local.get $c) (i32.const 4)))
                (br $vec_loop)))
            ;; the lanes folded in halves, in the vector unit: a call per lane cost a tenth of an int4 pass
            (local.set $l (f32x4.pmin (local.get $l)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $l) (local.get $l))))
            (local.set $h (f32x4.pmax (local.get $h)
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $h) (local.get $h))))
            (local.set $sl (f32x4.extract_lane 0 (f32x4.pmin (local.get $l)
              (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $l) (local.get $l)))))
            (local.set $sh (f32x4.extract_lane 0 (f32x4.pmax (local.get $h)
              (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $h) (local.get $h)))))
            (block $tail_done
              (loop $tail_loop
                (br_if $tail_done (i32.ge_u (local.get $c) (local.get $end)))
                (local.set $s (f32.load (i32.add (local.get $x) (i32.shl (local.get $c) (i32.const 2)))))
                (local.set $sl (select (local.get $s) (local.get $sl) (f32.lt (local.get $s) (local.get $sl))))
                (local.set $sh (select (local.get $s) (local.get $sh) (f32.lt (local.get $sh) (local.get $s))))
                (local.set $c (i32.add (local.get $c) (i32.const 1)))
                (br $tail_loop)))
            (f32.store (local.get $lo) (local.get $sl))
            (f32.store (local.get $hi) (local.get $sh))
            (local.set $lo (i32.add (local.get $lo) (i32.const 4)))
            (local.set $hi (i32.add (local.get $hi) (i32.const 4)))
            (br $blocks_loop)))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_loop))))

  ;; Codes of a row-major [rows, cols] matrix in blocks of `block` along each row, block j (row-major
  ;; over [rows, B]) with float64 inv[j] and zero point z[j]: w = clamp(round(x · inv) + z, lo, hi) in
  ;; float64, round ties toward +∞ (Math.round), the byte its integer's low 8 bits (an Int8Array store
  ;; of an unclamped signed code), NaN and ±∞ to 0 as a typed-array store makes them. With res ≠ 0,
  ;; res (float64[4]) += [Σ x², Σ (x − d)², max |x − d| (NaN ignored), #{d = 0}] where
  ;; d = (code − z) · scale[j] in float32, code the byte read back signed (signed ≠ 0) or unsigned.
  (func (export "row_block_quantize")
    (param $x i32) (param $out i32) (param $rows i32) (param $cols i32) (param $block i32) (param $inv i32)
    (param $zero i32) (param $scale i32) (param $lo f64) (param $hi f64) (param $signed i32) (param $res i32)
    (local $r i32) (local $c i32) (local $c0 i32) (local $e i32) (local $end i32) (local $vec_end i32) (local $p i32)
    (local $xorv v128) (local $vx v128) (local $y v128) (local $f v128) (local $wa v128) (local $wb v128) (local $xa v128) (local $xb v128) (local $q v128) (local $d v128) (local $ea v128) (local $eb v128)
    (local $invv v128) (local $zv v128) (local $zf v128) (local $sv v128) (local $lov v128) (local $hiv v128)
    (local $signal v128) (local $noise v128) (local $max v128) (local $zeros v128)
    (local $sinv f64) (local $sz f64) (local $ss f32) (local $sx f64) (local $se f64) (local $sd f32) (local $qs i32)
    (local $s_signal f64) (local $s_noise f64) (local $s_max f64) (local $s_zeros i32)
    (local.set $lov (f64x2.splat (local.get $lo)))
    (local.set $hiv (f64x2.splat (local.get $hi)))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $c (i32.const 0))
        (block $blocks_done
          (loop $blocks_loop
            (br_if $blocks_done (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $end (i32.add (local.get $c) (local.get $block)))
            (if (i32.gt_u (local.get $end) (local.get $cols)) (then (local.set $end (local.get $cols))))
            (local.set $vec_end (i32.sub (local.get $end) (i32.and (i32.sub (local.get $end) (local.get $c)) (i32.const 3))))
            (local.set $sinv (f64.load (local.get $inv)))
            (local.set $sz (f64.load (local.get $zero)))
            (local.set $ss (f32.load (local.get $scale)))
            (local.set $invv (f64x2.splat (local.get $sinv)))
            (local.set $zv (f64x2.splat (local.get $sz)))
            (local.set $c0 (local.get $c))
            (block $vec_done
              (loop $vec_loop
                (br_if $vec_done (i32.ge_u (local.get $c) (local.get $vec_end)))
                (local.set $p (i32.shl (local.get $c) (i32.const 2)))
                (local.set $vx (v128.load (i32.add (local.get $x) (local.get $p))))
                (local.set $xa (f64x2.promote_low_f32x4 (local.get $vx)))
                (local.set $xb (f64x2.promote_low_f32x4
                  (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $vx) (local.get $vx))))
                ;; w = clamp(Math.round(x · inv) + z, lo, hi) + 1.5 · 2^52, two lanes at a time: the
                ;; code's low 32 bits are the low word of each float64 (see $code)
                (local.set $y (f64x2.mul (local.get $xa) (local.get $invv)))
                (local.set $f (f64x2.floor (local.get $y)))
                (local.set $wa (f64x2.add (f64x2.pmax (f64x2.pmin (f64x2.add (f64x2.add (local.get $f)
                  (v128.and (v128.const f64x2 1 1) (f64x2.ge (f64x2.sub (local.get $y) (local.get $f))
                    (v128.const f64x2 0.5 0.5)))) (local.get $zv)) (local.get $hiv)) (local.get $lov))
                  (v128.const f64x2 0x1.8p52 0x1.8p52)))
                (local.set $y (f64x2.mul (local.get $xb) (local.get $invv)))
                (local.set $f (f64x2.floor (local.get $y)))
                (local.set $wb (f64x2.add (f64x2.pmax (f64x2.pmin (f64x2.add (f64x2.add (local.get $f)
                  (v128.and (v128.const f64x2 1 1) (f64x2.ge (f64x2.sub (local.get $y) (local.get $f))
                    (v128.const f64x2 0.5 0.5)))) (local.get $zv)) (local.get $hiv)) (local.get $lov))
                  (v128.const f64x2 0x1.8p52 0x1.8p52)))
                (local.set $q (i8x16.shuffle 0 8 16 24 0 0 0 0 0 0 0 0 0 0 0 0 (local.get $wa) (local.get $wb)))
                (v128.store32_lane 0 (i32.add (local.get $out) (local.get $c)) (local.get $q))
                (local.set $c (i32.add (local.get $c) (i32.const 4)))
                (br $vec_loop)))
            (if (local.get $res)
              (then
                ;; the block's errors in a loop of their own (fewer live vectors than one fused loop,
                ;; whose spills cost more than reading x and the codes again from L1): the stored byte
                ;; read as the decode reads it, an int8 two's complement as (byte xor 128) − 128
                (local.set $zf (f32x4.splat (f32.add (f32.demote_f64 (local.get $sz))
                  (f32.convert_i32_u (i32.shl (local.get $signed) (i32.const 7))))))
                (local.set $sv (f32x4.splat (local.get $ss)))
                (local.set $xorv (i32x4.splat (i32.shl (local.get $signed) (i32.const 7))))
                (local.set $e (local.get $c0))
                (block $err_done
                  (loop $err_loop
                    (br_if $err_done (i32.ge_u (local.get $e) (local.get $vec_end)))
                    (local.set $vx (v128.load (i32.add (local.get $x) (i32.shl (local.get $e) (i32.const 2)))))
                    (local.set $xa (f64x2.promote_low_f32x4 (local.get $vx)))
                    (local.set $xb (f64x2.promote_low_f32x4
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $vx) (local.get $vx))))
                    (local.set $d
                      (f32x4.mul
                        (f32x4.sub
                          (f32x4.convert_i32x4_s
                            (v128.xor (local.get $xorv)
                              (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u
                                (v128.load32_zero (i32.add (local.get $out) (local.get $e)))))))
                          (local.get $zf))
                        (local.get $sv)))
                    (local.set $ea (f64x2.sub (local.get $xa) (f64x2.promote_low_f32x4 (local.get $d))))
                    (local.set $eb (f64x2.sub (local.get $xb) (f64x2.promote_low_f32x4
                      (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $d) (local.get $d)))))
                    (local.set $signal (f64x2.add (local.get $signal)
                      (f64x2.add (f64x2.mul (local.get $xa) (local.get $xa)) (f64x2.mul (local.get $xb) (local.get $xb)))))
                    (local.set $noise (f64x2.add (local.get $noise)
                      (f64x2.add (f64x2.mul (local.get $ea) (local.get $ea)) (f64x2.mul (local.get $eb) (local.get $eb)))))
                    (local.set $max (f64x2.pmax (f64x2.pmax (local.get $max) (f64x2.abs (local.get $ea)))
                      (f64x2.abs (local.get $eb))))
                    (local.set $zeros (i32x4.sub (local.get $zeros)
                      (f32x4.eq (local.get $d) (v128.const f32x4 0 0 0 0))))
                    (local.set $e (i32.add (local.get $e) (i32.const 4)))
                    (br $err_loop)))))
            (block $tail_done
              (loop $tail_loop
                (br_if $tail_done (i32.ge_u (local.get $c) (local.get $end)))
                (local.set $sx (f64.promote_f32 (f32.load (i32.add (local.get $x) (i32.shl (local.get $c) (i32.const 2))))))
                (local.set $qs (call $code (local.get $sx) (local.get $invv) (local.get $zv) (local.get $lov) (local.get $hiv)))
                (i32.store8 (i32.add (local.get $out) (local.get $c)) (local.get $qs))
                (if (local.get $res)
                  (then
                    (local.set $qs (i32.shl (local.get $qs) (i32.const 24)))
                    (local.set $qs (select (i32.shr_s (local.get $qs) (i32.const 24))
                      (i32.shr_u (local.get $qs) (i32.const 24)) (local.get $signed)))
                    (local.set $sd (f32.mul (f32.sub (f32.convert_i32_s (local.get $qs)) (f32.demote_f64 (local.get $sz)))
                      (local.get $ss)))
                    (local.set $se (f64.abs (f64.sub (local.get $sx) (f64.promote_f32 (local.get $sd)))))
                    (local.set $s_signal (f64.add (local.get $s_signal) (f64.mul (local.get $sx) (local.get $sx))))
                    (local.set $s_noise (f64.add (local.get $s_noise) (f64.mul (local.get $se) (local.get $se))))
                    (local.set $s_max
                      (select (local.get $se) (local.get $s_max) (f64.lt (local.get $s_max) (local.get $se))))
                    (local.set $s_zeros (i32.add (local.get $s_zeros) (f32.eq (local.get $sd) (f32.const 0))))))
                (local.set $c (i32.add (local.get $c) (i32.const 1)))
                (br $tail_loop)))
            (local.set $inv (i32.add (local.get $inv) (i32.const 8)))
            (local.set $zero (i32.add (local.get $zero) (i32.const 8)))
            (local.set $scale (i32.add (local.get $scale) (i32.const 4)))
            (br $blocks_loop)))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $out (i32.add (local.get $out) (local.get $cols)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_loop)))
    (if (local.get $res)
      (then
        (f64.store (local.get $res) (f64.add (f64.load (local.get $res)) (f64.add (local.get $s_signal)
          (f64.add (f64x2.extract_lane 0 (local.get $signal)) (f64x2.extract_lane 1 (local.get $signal))))))
        (f64.store offset=8 (local.get $res) (f64.add (f64.load offset=8 (local.get $res)) (f64.add (local.get $s_noise)
          (f64.add (f64x2.extract_lane 0 (local.get $noise)) (f64x2.extract_lane 1 (local.get $noise))))))
        (local.set $max (f64x2.pmax (local.get $max)
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $max) (local.get $max))))
        (local.set $max (f64x2.pmax (local.get $max) (f64x2.splat (local.get $s_max))))
        (local.set $max (f64x2.pmax (local.get $max) (f64x2.splat (f64.load offset=16 (local.get $res)))))
        (f64.store offset=16 (local.get $res) (f64x2.extract_lane 0 (local.get $max)))
        (f64.store offset=24 (local.get $res) (f64.add (f64.load offset=24 (local.get $res))
          (f64.convert_i32_s (i32.add (local.get $s_zeros) (i32.add
            (i32.add (i32x4.extract_lane 0 (local.get $zeros)) (i32x4.extract_lane 1 (local.get $zeros)))
            (i32.add (i32x4.extract_lane 2 (local.get $zeros)) (i32x4.extract_lane 3 (local.get $zeros)))))))))))

  ;; out = ((q xor qxor) − zero[j]) · scale[j] in float32 over a row-major [rows, cols] matrix of byte
  ;; codes in blocks of `block` along each row, block j = r · B + b: the int8 / int4 decodes of the row
  ;; path (a small integer times a float32 rounds once, so this is fround((code − z) · s) bit for bit);
  ;; qxor = 128 reads int8 two's complement as code + 128, with zero[j] raised by 128 to match
  (func (export "row_block_decode")
    (param $q i32) (param $out i32) (param $rows i32) (param $cols i32) (param $block i32) (param $scale i32)
    (param $zero i32) (param $qxor i32)
    (local $r i32) (local $c i32) (local $end i32) (local $vec_end i32) (local $xorv v128) (local $sv v128)
    (local $zv v128) (local $ss f32) (local $sz f32)
    (local.set $xorv (i32x4.splat (local.get $qxor)))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $c (i32.const 0))
        (block $blocks_done
          (loop $blocks_loop
            (br_if $blocks_done (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $end (i32.add (local.get $c) (local.get $block)))
            (if (i32.gt_u (local.get $end) (local.get $cols)) (then (local.set $end (local.get $cols))))
            (local.set $vec_end (i32.sub (local.get $end) (i32.and (i32.sub (local.get $end) (local.get $c)) (i32.const 3))))
            (local.set $ss (f32.load (local.get $scale)))
            (local.set $sz (f32.load (local.get $zero)))
            (local.set $sv (f32x4.splat (local.get $ss)))
            (local.set $zv (f32x4.splat (local.get $sz)))
            (block $vec_done
              (loop $vec_loop
                (br_if $vec_done (i32.ge_u (local.get $c) (local.get $vec_end)))
                (v128.store (i32.add (local.get $out) (i32.shl (local.get $c) (i32.const 2)))
                  (f32x4.mul
                    (f32x4.sub
                      (f32x4.convert_i32x4_s
                        (v128.xor (local.get $xorv)
                          (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u
                            (v128.load32_zero (i32.add (local.get $q) (local.get $c)))))))
                      (local.get $zv))
                    (local.get $sv)))
                (local.set $c (i32.add (local.get $c) (i32.const 4)))
                (br $vec_loop)))
            (block $tail_done
              (loop $tail_loop
                (br_if $tail_done (i32.ge_u (local.get $c) (local.get $end)))
                (f32.store (i32.add (local.get $out) (i32.shl (local.get $c) (i32.const 2)))
                  (f32.mul
                    (f32.sub
                      (f32.convert_i32_s (i32.xor (local.get $qxor) (i32.load8_u (i32.add (local.get $q) (local.get $c)))))
                      (local.get $sz))
                    (local.get $ss)))
                (local.set $c (i32.add (local.get $c) (i32.const 1)))
                (br $tail_loop)))
            (local.set $scale (i32.add (local.get $scale) (i32.const 4)))
            (local.set $zero (i32.add (local.get $zero) (i32.const 4)))
            (br $blocks_loop)))
        (local.set $q (i32.add (local.get $q) (local.get $cols)))
        (local.set $out (i32.add (local.get $out) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_loop))))

    ;; One code in the low 32 bits of lane 0's float64 (as the vector loop computes it):
  ;; w = clamp(Math.round(x · inv) + z, lo, hi) with Math.round(y) = floor(y) + (y − floor(y) ≥ 0.5)
  ;; (exact: y − floor(y) has no rounding error), clamped by pmin / pmax (one instruction each, and a
  ;; NaN stays NaN), then + 1.5 · 2^52, which puts an integer |w| < 2^51 in the low bits of the float64
  ;; as two's complement: its low byte is what a typed-array store keeps, and ±∞ and NaN (whose low
  ;; bits are 0) give 0, as the store does.
  (func $code (param $x f64) (param $inv v128) (param $z v128) (param $lo v128) (param $hi v128) (result i32)
    (local $y v128) (local $f v128)
    (local.set $y (f64x2.mul (f64x2.splat (local.get $x)) (local.get $inv)))
    (local.set $f (f64x2.floor (local.get $y)))
    (i32x4.extract_lane 0 (f64x2.add (f64x2.pmax (f64x2.pmin (f64x2.add (f64x2.add (local.get $f)
      (v128.and (v128.const f64x2 1 1) (f64x2.ge (f64x2.sub (local.get $y) (local.get $f))
        (v128.const f64x2 0.5 0.5)))) (local.get $z)) (local.get $hi)) (local.get $lo))
      (v128.const f64x2 0x1.8p52 0x1.8p52))))
)
