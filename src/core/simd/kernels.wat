;; WebAssembly SIMD kernels for the weight compressors' hot loops. Source of truth for
;; kernels-wasm.ts (regenerate with `npm run build:wasm`; a test checks the two agree).
;;
;; All pointers are byte offsets into this module's memory; the JS side (./index.ts) stages
;; inputs there, calls one function, and copies results out. Matrices are row-major with `cols`
;; float32 values per row. Comparisons use pmin/pmax (b < a ? b : a), which map to one x86/ARM
;; instruction each and leave a NaN input out of a range rather than spreading it.
(module
  (memory (export "memory") 1)

  ;; lo[c] = min(lo[c], x[r][c]), hi[c] = max(hi[c], x[r][c]) over every row r
  (func (export "column_ranges")
    (param $x i32) (param $rows i32) (param $cols i32) (param $lo i32) (param $hi i32)
    (local $row_end i32) (local $vec_end i32) (local $p i32) (local $c i32) (local $v v128) (local $s f32)
    (local.set $row_end (i32.add (local.get $x) (i32.shl (i32.mul (local.get $rows) (local.get $cols)) (i32.const 2))))
    (local.set $vec_end (i32.and (local.get $cols) (i32.const -4)))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $x) (local.get $row_end)))
        (local.set $c (i32.const 0))
        (block $vec_done
          (loop $vec_loop
            (br_if $vec_done (i32.ge_u (local.get $c) (local.get $vec_end)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (local.set $v (v128.load (i32.add (local.get $x) (local.get $p))))
            (v128.store (i32.add (local.get $lo) (local.get $p))
              (f32x4.pmin (v128.load (i32.add (local.get $lo) (local.get $p))) (local.get $v)))
            (v128.store (i32.add (local.get $hi) (local.get $p))
              (f32x4.pmax (v128.load (i32.add (local.get $hi) (local.get $p))) (local.get $v)))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $vec_loop)))
        (block $tail_done
          (loop $tail_loop
            (br_if $tail_done (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (local.set $s (f32.load (i32.add (local.get $x) (local.get $p))))
            (f32.store (i32.add (local.get $lo) (local.get $p))
              (call $pmin (f32.load (i32.add (local.get $lo) (local.get $p))) (local.get $s)))
            (f32.store (i32.add (local.get $hi) (local.get $p))
              (call $pmax (f32.load (i32.add (local.get $hi) (local.get $p))) (local.get $s)))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $tail_loop)))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
        (br $rows_loop))))

  ;; m[c] = max(m[c], |x[r][c]|) over every row r: all a symmetric scale needs
  (func (export "column_abs_max")
    (param $x i32) (param $rows i32) (param $cols i32) (param $m i32)
    (local $row_end i32) (local $vec_end i32) (local $p i32) (local $c i32)
    (local.set $row_end (i32.add (local.get $x) (i32.shl (i32.mul (local.get $rows) (local.get $cols)) (i32.const 2))))
    (local.set $vec_end (i32.and (local.get $cols) (i32.const -4)))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $x) (local.get $row_end)))
        (local.set $c (i32.const 0))
        (block $vec_done
          (loop $vec_loop
            (br_if $vec_done (i32.ge_u (local.get $c) (local.get $vec_end)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (v128.store (i32.add (local.get $m) (local.get $p))
              (f32x4.pmax (v128.load (i32.add (local.get $m) (local.get $p)))
                (f32x4.abs (v128.load (i32.add (local.get $x) (local.get $p))))))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $vec_loop)))
        (block $tail_done
          (loop $tail_loop
            (br_if $tail_done (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (f32.store (i32.add (local.get $m) (local.get $p))
              (call $pmax (f32.load (i32.add (local.get $m) (local.get $p)))
                (f32.abs (f32.load (i32.add (local.get $x) (local.get $p))))))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $tail_loop)))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
        (br $rows_loop))))

  ;; out[r][c] = clamp(trunc(x[r][c] · inv[c] + offset[c]), 0, max) − bias, in float32 arithmetic:
  ;; round to nearest of x / s shifted by a zero point when offset = z + 0.5. Bytes are written
  ;; modulo 256, so a bias of 128 gives int8 two's complement of a code in 0..255. Four columns per
  ;; step: min against max, then two saturating narrows (i32 → i16 → u8) give the lower clamp.
  ;; (Written out rather than calling a helper: engines do not all inline wasm calls.)
  (func (export "quantize_columns")
    (param $x i32) (param $out i32) (param $rows i32) (param $cols i32) (param $inv i32) (param $offset i32)
    (param $max i32) (param $bias i32)
    (local $r i32) (local $c i32) (local $p i32) (local $vec_end i32) (local $maxv v128) (local $biasv v128)
    (local $q v128) (local $qs i32)
    (local.set $vec_end (i32.and (local.get $cols) (i32.const -4)))
    (local.set $maxv (i32x4.splat (local.get $max)))
    (local.set $biasv (i8x16.splat (local.get $bias)))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $c (i32.const 0))
        (block $vec_done
          (loop $vec_loop
            (br_if $vec_done (i32.ge_u (local.get $c) (local.get $vec_end)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (local.set $q
              (i32x4.min_s
                (i32x4.trunc_sat_f32x4_s
                  (f32x4.add
                    (f32x4.mul (v128.load (i32.add (local.get $x) (local.get $p)))
                      (v128.load (i32.add (local.get $inv) (local.get $p))))
                    (v128.load (i32.add (local.get $offset) (local.get $p)))))
                (local.get $maxv)))
            (local.set $q (i16x8.narrow_i32x4_s (local.get $q) (local.get $q)))
            (v128.store32_lane 0 (i32.add (local.get $out) (local.get $c))
              (i8x16.sub (i8x16.narrow_i16x8_u (local.get $q) (local.get $q)) (local.get $biasv)))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $vec_loop)))
        (block $tail_done
          (loop $tail_loop
            (br_if $tail_done (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (local.set $qs
              (i32.trunc_sat_f32_s
                (f32.add
                  (f32.mul (f32.load (i32.add (local.get $x) (local.get $p)))
                    (f32.load (i32.add (local.get $inv) (local.get $p))))
                  (f32.load (i32.add (local.get $offset) (local.get $p))))))
            (local.set $qs (select (local.get $max) (local.get $qs) (i32.gt_s (local.get $qs) (local.get $max))))
            (local.set $qs (select (i32.const 0) (local.get $qs) (i32.lt_s (local.get $qs) (i32.const 0))))
            (i32.store8 (i32.add (local.get $out) (local.get $c)) (i32.sub (local.get $qs) (local.get $bias)))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $tail_loop)))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $out (i32.add (local.get $out) (local.get $cols)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_loop))))

  ;; out[r][c] = ((q[r][c] xor qxor) − zero[c]) · scale[c] in float32 (the int4/int8 decodes: a small
  ;; integer times a float32 rounds once); q are bytes, qxor = 128 reads int8 two's complement as code + 128
  (func (export "decode_columns")
    (param $q i32) (param $out i32) (param $rows i32) (param $cols i32) (param $scale i32) (param $zero i32)
    (param $qxor i32)
    (local $r i32) (local $c i32) (local $p i32) (local $vec_end i32) (local $xorv v128)
    (local.set $vec_end (i32.and (local.get $cols) (i32.const -4)))
    (local.set $xorv (i32x4.splat (local.get $qxor)))
    (block $rows_done
      (loop $rows_loop
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $c (i32.const 0))
        (block $vec_done
          (loop $vec_loop
            (br_if $vec_done (i32.ge_u (local.get $c) (local.get $vec_end)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (v128.store (i32.add (local.get $out) (local.get $p))
              (f32x4.mul
                (f32x4.sub
                  (f32x4.convert_i32x4_s (v128.xor (local.get $xorv)
                    (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u
                      (v128.load32_zero (i32.add (local.get $q) (local.get $c)))))))
                  (v128.load (i32.add (local.get $zero) (local.get $p))))
                (v128.load (i32.add (local.get $scale) (local.get $p)))))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $vec_loop)))
        (block $tail_done
          (loop $tail_loop
            (br_if $tail_done (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (f32.store (i32.add (local.get $out) (local.get $p))
              (f32.mul
                (f32.sub
                  (f32.convert_i32_s (i32.xor (local.get $qxor) (i32.load8_u (i32.add (local.get $q) (local.get $c)))))
                  (f32.load (i32.add (local.get $zero) (local.get $p))))
                (f32.load (i32.add (local.get $scale) (local.get $p)))))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $tail_loop)))
        (local.set $q (i32.add (local.get $q) (local.get $cols)))
        (local.set $out (i32.add (local.get $out) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_loop))))

  ;; res = [lo f32, hi f32, zeros i32] updated with min, max and the count of exact zeros of x[0..n)
  (func (export "flat_range") (param $x i32) (param $n i32) (param $res i32)
    (local $end i32) (local $vec_end i32) (local $lo v128) (local $hi v128) (local $zeros v128) (local $v v128)
    (local $s f32) (local $a f32) (local $b f32) (local $z i32)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vec_end (i32.add (local.get $x) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (local.set $lo (f32x4.splat (f32.load (local.get $res))))
    (local.set $hi (f32x4.splat (f32.load offset=4 (local.get $res))))
    (block $vec_done
      (loop $vec_loop
        (br_if $vec_done (i32.ge_u (local.get $x) (local.get $vec_end)))
        (local.set $v (v128.load (local.get $x)))
        (local.set $lo (f32x4.pmin (local.get $lo) (local.get $v)))
        (local.set $hi (f32x4.pmax (local.get $hi) (local.get $v)))
        ;; eq is all ones (−1) in lanes that hold ±0
        (local.set $zeros (i32x4.sub (local.get $zeros) (f32x4.eq (local.get $v) (v128.const f32x4 0 0 0 0))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (br $vec_loop)))
    (local.set $a (call $pmin
      (call $pmin (f32x4.extract_lane 0 (local.get $lo)) (f32x4.extract_lane 1 (local.get $lo)))
      (call $pmin (f32x4.extract_lane 2 (local.get $lo)) (f32x4.extract_lane 3 (local.get $lo)))))
    (local.set $b (call $pmax
      (call $pmax (f32x4.extract_lane 0 (local.get $hi)) (f32x4.extract_lane 1 (local.get $hi)))
      (call $pmax (f32x4.extract_lane 2 (local.get $hi)) (f32x4.extract_lane 3 (local.get $hi)))))
    (local.set $z (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $zeros)) (i32x4.extract_lane 1 (local.get $zeros)))
      (i32.add (i32x4.extract_lane 2 (local.get $zeros)) (i32x4.extract_lane 3 (local.get $zeros)))))
    (block $tail_done
      (loop $tail_loop
        (br_if $tail_done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $s (f32.load (local.get $x)))
        (local.set $a (call $pmin (local.get $a) (local.get $s)))
        (local.set $b (call $pmax (local.get $b) (local.get $s)))
        (local.set $z (i32.add (local.get $z) (f32.eq (local.get $s) (f32.const 0))))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (br $tail_loop)))
    (f32.store (local.get $res) (local.get $a))
    (f32.store offset=4 (local.get $res) (local.get $b))
    (i32.store offset=8 (local.get $res) (i32.add (i32.load offset=8 (local.get $res)) (local.get $z))))

  ;; res (float64[4]) += [Σ x², Σ (x − y)², max |x − y| (NaN ignored), #{y = 0}] over x[0..n), y[0..n),
  ;; in float64; n is a multiple of 4 (the caller pads both with zeros and corrects the zero count)
  (func (export "error_stats") (param $x i32) (param $y i32) (param $n i32) (param $res i32)
    (local $end i32) (local $vx v128) (local $vy v128) (local $xa v128) (local $xb v128) (local $ea v128)
    (local $eb v128) (local $signal v128) (local $noise v128) (local $max v128) (local $zeros v128)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $vx (v128.load (local.get $x)))
        (local.set $vy (v128.load (local.get $y)))
        (local.set $xa (f64x2.promote_low_f32x4 (local.get $vx)))
        (local.set $xb (f64x2.promote_low_f32x4
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $vx) (local.get $vx))))
        (local.set $ea (f64x2.sub (local.get $xa) (f64x2.promote_low_f32x4 (local.get $vy))))
        (local.set $eb (f64x2.sub (local.get $xb) (f64x2.promote_low_f32x4
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $vy) (local.get $vy)))))
        (local.set $signal (f64x2.add (local.get $signal)
          (f64x2.add (f64x2.mul (local.get $xa) (local.get $xa)) (f64x2.mul (local.get $xb) (local.get $xb)))))
        (local.set $noise (f64x2.add (local.get $noise)
          (f64x2.add (f64x2.mul (local.get $ea) (local.get $ea)) (f64x2.mul (local.get $eb) (local.get $eb)))))
        (local.set $max
          (f64x2.pmax (f64x2.pmax (local.get $max) (f64x2.abs (local.get $ea))) (f64x2.abs (local.get $eb))))
        (local.set $zeros (i32x4.sub (local.get $zeros) (f32x4.eq (local.get $vy) (v128.const f32x4 0 0 0 0))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $y (i32.add (local.get $y) (i32.const 16)))
        (br $loop)))
    (f64.store (local.get $res) (f64.add (f64.load (local.get $res))
      (f64.add (f64x2.extract_lane 0 (local.get $signal)) (f64x2.extract_lane 1 (local.get $signal)))))
    (f64.store offset=8 (local.get $res) (f64.add (f64.load offset=8 (local.get $res))
      (f64.add (f64x2.extract_lane 0 (local.get $noise)) (f64x2.extract_lane 1 (local.get $noise)))))
    (local.set $max (f64x2.pmax (local.get $max)
      (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $max) (local.get $max))))
    (local.set $max (f64x2.pmax (local.get $max) (f64x2.splat (f64.load offset=16 (local.get $res)))))
    (f64.store offset=16 (local.get $res) (f64x2.extract_lane 0 (local.get $max)))
    (f64.store offset=24 (local.get $res) (f64.add (f64.load offset=24 (local.get $res))
      (f64.convert_i32_s (i32.add
        (i32.add (i32x4.extract_lane 0 (local.get $zeros)) (i32x4.extract_lane 1 (local.get $zeros)))
        (i32.add (i32x4.extract_lane 2 (local.get $zeros)) (i32x4.extract_lane 3 (local.get $zeros))))))))

  ;; bins[i] = min(floor((x[i] − lo) · scale), bins − 1) for lo ≤ x[i] ≤ hi, else `bins` (a discard slot:
  ;; NaN and values outside the range), in float64 like the JS side that builds bin tables; two float64
  ;; lanes at a time, four bins per store
  (func $bins_of (param $x i32) (param $n i32) (param $lo f64) (param $hi f64) (param $scale f64)
    (param $bins i32) (param $out i32)
    (local $end i32) (local $vec_end i32) (local $v v128) (local $lov v128) (local $hiv v128) (local $scalev v128)
    (local $a v128) (local $b v128) (local $last i32) (local $d f64) (local $k i32)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vec_end (i32.add (local.get $x) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (local.set $lov (f64x2.splat (local.get $lo)))
    (local.set $hiv (f64x2.splat (local.get $hi)))
    (local.set $scalev (f64x2.splat (local.get $scale)))
    (local.set $last (i32.sub (local.get $bins) (i32.const 1)))
    (block $vec_done
      (loop $vec_loop
        (br_if $vec_done (i32.ge_u (local.get $x) (local.get $vec_end)))
        (local.set $v (v128.load (local.get $x)))
        (local.set $a (f64x2.promote_low_f32x4 (local.get $v)))
        (local.set $b (f64x2.promote_low_f32x4
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))
        (v128.store (local.get $out)
          (v128.bitselect
            ;; in range (the range holds no NaN): the bin, capped so x = hi lands in the last one
            (i32x4.min_s
              (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
                (i32x4.trunc_sat_f64x2_s_zero
                  (f64x2.mul (f64x2.sub (local.get $a) (local.get $lov)) (local.get $scalev)))
                (i32x4.trunc_sat_f64x2_s_zero
                  (f64x2.mul (f64x2.sub (local.get $b) (local.get $lov)) (local.get $scalev))))
              (i32x4.splat (local.get $last)))
            (i32x4.splat (local.get $bins))
            ;; lo ≤ x ≤ hi per float64 lane (all ones or zeros), the low words of both halves
            (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27
              (v128.and (f64x2.ge (local.get $a) (local.get $lov)) (f64x2.le (local.get $a) (local.get $hiv)))
              (v128.and (f64x2.ge (local.get $b) (local.get $lov)) (f64x2.le (local.get $b) (local.get $hiv))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $out (i32.add (local.get $out) (i32.const 16)))
        (br $vec_loop)))
    (block $tail_done
      (loop $tail_loop
        (br_if $tail_done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $d (f64.promote_f32 (f32.load (local.get $x))))
        (local.set $k (i32.trunc_sat_f64_s (f64.mul (f64.sub (local.get $d) (local.get $lo)) (local.get $scale))))
        (local.set $k (select (local.get $k) (local.get $last) (i32.lt_s (local.get $k) (local.get $last))))
        (i32.store (local.get $out)
          (select (local.get $k) (local.get $bins)
            (i32.and (f64.ge (local.get $d) (local.get $lo)) (f64.le (local.get $d) (local.get $hi)))))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (local.set $out (i32.add (local.get $out) (i32.const 4)))
        (br $tail_loop))))

  ;; count[bin(x[i])] += 1; count is int32[bins + 1], its last slot collecting NaN and values out of
  ;; range; scratch holds n int32 bins
  (func (export "histogram")
    (param $x i32) (param $n i32) (param $lo f64) (param $hi f64) (param $scale f64) (param $count i32)
    (param $bins i32) (param $scratch i32)
    (local $p i32) (local $end i32) (local $at i32)
    (call $bins_of (local.get $x) (local.get $n) (local.get $lo) (local.get $hi) (local.get $scale)
      (local.get $bins) (local.get $scratch))
    (local.set $p (local.get $scratch))
    (local.set $end (i32.add (local.get $scratch) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $at (i32.add (local.get $count) (i32.shl (i32.load (local.get $p)) (i32.const 2))))
        (i32.store (local.get $at) (i32.add (i32.load (local.get $at)) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $loop))))

  ;; out[i] = code of x[i]: lut[bin] (uint16) when the whole bin lies between two midpoints and
  ;; holds no exact zero; otherwise (lut 0xffff) zero_code for an exact zero when zeros have a code
  ;; of their own (zero_code ≥ 0), else the first j with x ≤ mids[j] (float64, the last +∞), moved
  ;; past zero_code. lut has bins + 1 entries, the last (NaN, out of range) 0xffff; scratch holds n
  ;; int32 bins.
  (func (export "assign_codes")
    (param $x i32) (param $n i32) (param $out i32) (param $lo f64) (param $hi f64) (param $scale f64)
    (param $lut i32) (param $bins i32) (param $mids i32) (param $zero_code i32) (param $scratch i32)
    (local $end i32) (local $a f32) (local $code i32) (local $j i32)
    (call $bins_of (local.get $x) (local.get $n) (local.get $lo) (local.get $hi) (local.get $scale)
      (local.get $bins) (local.get $scratch))
    (local.set $end (i32.add (local.get $out) (local.get $n)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $out) (local.get $end)))
        (local.set $code (i32.load16_u (i32.add (local.get $lut) (i32.shl (i32.load (local.get $scratch)) (i32.const 1)))))
        (if (i32.eq (local.get $code) (i32.const 0xffff))
          (then
            (local.set $a (f32.load (local.get $x)))
            (local.set $j (i32.const 0))
            (block $found
              (loop $search
                ;; "not greater" rather than "less or equal", so a NaN stops at once
                (br_if $found (i32.eqz (f64.gt (f64.promote_f32 (local.get $a))
                  (f64.load (i32.add (local.get $mids) (i32.shl (local.get $j) (i32.const 3)))))))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br $search)))
            (local.set $code
              (select (local.get $zero_code)
                (i32.add (local.get $j)
                  (i32.and (i32.ge_s (local.get $zero_code) (i32.const 0))
                    (i32.ge_s (local.get $j) (local.get $zero_code))))
                (i32.and (i32.ge_s (local.get $zero_code) (i32.const 0)) (f32.eq (local.get $a) (f32.const 0)))))))
        (i32.store8 (local.get $out) (local.get $code))
        (local.set $out (i32.add (local.get $out) (i32.const 1)))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (local.set $scratch (i32.add (local.get $scratch) (i32.const 4)))
        (br $loop))))

  ;; h[i] = x[i] as IEEE half, round to nearest even (Giesen's float_to_half_fast3_rtne, four lanes):
  ;; below 2^−14 the FPU rounds for us by adding 0.5 and keeping the low bits; normal values add a
  ;; rebiased exponent plus 0xfff and the lowest kept mantissa bit, then shift; ≥ 65536, ±∞ and NaN
  ;; (quiet, sign kept) are chosen by mask. n is a multiple of 4 (the caller pads).
  (func (export "float32_to_float16") (param $x i32) (param $n i32) (param $h i32)
    (local $end i32) (local $sign v128) (local $a v128) (local $sub v128) (local $norm v128) (local $big v128)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $a (v128.load (local.get $x)))
        (local.set $sign (v128.and (local.get $a) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000)))
        (local.set $a (v128.xor (local.get $a) (local.get $sign)))
        (local.set $sub
          (i32x4.sub (f32x4.add (local.get $a) (v128.const f32x4 0.5 0.5 0.5 0.5))
            (v128.const i32x4 0x3f000000 0x3f000000 0x3f000000 0x3f000000)))
        (local.set $norm
          (i32x4.shr_u
            (i32x4.add
              (i32x4.add (local.get $a) (v128.const i32x4 0xc8000fff 0xc8000fff 0xc8000fff 0xc8000fff))
              (v128.and (i32x4.shr_u (local.get $a) (i32.const 13)) (v128.const i32x4 1 1 1 1)))
            (i32.const 13)))
        (local.set $big
          (v128.bitselect (v128.const i32x4 0x7e00 0x7e00 0x7e00 0x7e00) (v128.const i32x4 0x7c00 0x7c00 0x7c00 0x7c00)
            (i32x4.gt_s (local.get $a) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))))
        (local.set $a
          (v128.or
            (v128.bitselect (local.get $sub)
              (v128.bitselect (local.get $big) (local.get $norm)
                (i32x4.ge_s (local.get $a) (v128.const i32x4 0x47800000 0x47800000 0x47800000 0x47800000)))
              (i32x4.lt_s (local.get $a) (v128.const i32x4 0x38800000 0x38800000 0x38800000 0x38800000)))
            (i32x4.shr_u (local.get $sign) (i32.const 16))))
        (v128.store64_lane 0 (local.get $h) (i16x8.narrow_i32x4_u (local.get $a) (local.get $a)))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (local.set $h (i32.add (local.get $h) (i32.const 8)))
        (br $loop))))

  ;; x[i] = h[i] widened (Giesen's half_to_float_fast5, four lanes): exponent and mantissa shift into
  ;; place and rebias by 112; ±∞/NaN rebias once more; zeros and subnormals are renormalised by a
  ;; float subtraction of 2^−14. n is a multiple of 4 (the caller pads).
  (func (export "float16_to_float32") (param $h i32) (param $n i32) (param $x i32)
    (local $end i32) (local $v v128) (local $o v128) (local $exp v128)
    (local.set $end (i32.add (local.get $h) (i32.shl (local.get $n) (i32.const 1))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $h) (local.get $end)))
        (local.set $v (i32x4.extend_low_i16x8_u (v128.load64_zero (local.get $h))))
        (local.set $o (i32x4.shl (v128.and (local.get $v) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff)) (i32.const 13)))
        (local.set $exp (v128.and (local.get $o) (v128.const i32x4 0x0f800000 0x0f800000 0x0f800000 0x0f800000)))
        (local.set $o (i32x4.add (local.get $o) (v128.const i32x4 0x38000000 0x38000000 0x38000000 0x38000000)))
        (local.set $o
          (v128.bitselect
            (i32x4.add (local.get $o) (v128.const i32x4 0x38000000 0x38000000 0x38000000 0x38000000))
            (local.get $o)
            (i32x4.eq (local.get $exp) (v128.const i32x4 0x0f800000 0x0f800000 0x0f800000 0x0f800000))))
        (local.set $o
          (v128.bitselect
            (f32x4.sub
              (i32x4.add (local.get $o) (v128.const i32x4 0x00800000 0x00800000 0x00800000 0x00800000))
              (v128.const i32x4 0x38800000 0x38800000 0x38800000 0x38800000))
            (local.get $o)
            (i32x4.eq (local.get $exp) (v128.const i32x4 0 0 0 0))))
        (v128.store (local.get $x)
          (v128.or (local.get $o)
            (i32x4.shl (v128.and (local.get $v) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000)) (i32.const 16))))
        (local.set $h (i32.add (local.get $h) (i32.const 8)))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (br $loop))))

  ;; Magnitude pruning works on the bits of |x| (sign cleared), which order like the values for
  ;; non-negative floats: a two-level radix select finds the threshold without sorting.

  ;; count[(|x| bits) >> 16] += 1 over x[0..n) (count is int32[65536])
  (func (export "abs_high_histogram") (param $x i32) (param $n i32) (param $count i32)
    (local $end i32) (local $at i32)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $at (i32.add (local.get $count)
          (i32.shl (i32.shr_u (i32.and (i32.load (local.get $x)) (i32.const 0x7fffffff)) (i32.const 16))
            (i32.const 2))))
        (i32.store (local.get $at) (i32.add (i32.load (local.get $at)) (i32.const 1)))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (br $loop))))

  ;; count[(|x| bits) & 0xffff] += 1 over the x[0..n) whose high 16 bits of |x| equal `high`; groups of
  ;; four with no such value (nearly all of them) are skipped by one vector compare
  (func (export "abs_low_histogram") (param $x i32) (param $n i32) (param $high i32) (param $count i32)
    (local $end i32) (local $vec_end i32) (local $highv v128)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vec_end (i32.add (local.get $x) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (local.set $highv (i32x4.splat (local.get $high)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $x) (local.get $vec_end)))
        (if (v128.any_true (i32x4.eq (local.get $highv)
              (i32x4.shr_u (v128.and (v128.load (local.get $x)) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff))
                (i32.const 16))))
          (then (call $low_histogram_scalar (local.get $x) (i32.const 4) (local.get $high) (local.get $count))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (br $loop)))
    (call $low_histogram_scalar (local.get $x) (i32.shr_u (i32.sub (local.get $end) (local.get $x)) (i32.const 2))
      (local.get $high) (local.get $count)))

  (func $low_histogram_scalar (param $x i32) (param $n i32) (param $high i32) (param $count i32)
    (local $end i32) (local $a i32) (local $at i32)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $a (i32.and (i32.load (local.get $x)) (i32.const 0x7fffffff)))
        (if (i32.eq (i32.shr_u (local.get $a) (i32.const 16)) (local.get $high))
          (then
            (local.set $at (i32.add (local.get $count) (i32.shl (i32.and (local.get $a) (i32.const 0xffff)) (i32.const 2))))
            (i32.store (local.get $at) (i32.add (i32.load (local.get $at)) (i32.const 1)))))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (br $loop))))

  ;; in place over x[0..n): x = 0 where |x| bits < t, and for the first `ties` whose |x| bits equal t
  ;; (index order); returns the ties still to zero. Groups of four without a tie take one vector step.
  (func (export "apply_threshold") (param $x i32) (param $n i32) (param $t i32) (param $ties i32) (result i32)
    (local $end i32) (local $vec_end i32) (local $tv v128) (local $v v128) (local $a v128)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vec_end (i32.add (local.get $x) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (local.set $tv (i32x4.splat (local.get $t)))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $x) (local.get $vec_end)))
        (local.set $v (v128.load (local.get $x)))
        (local.set $a (v128.and (local.get $v) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff)))
        (if (v128.any_true (i32x4.eq (local.get $a) (local.get $tv)))
          (then (local.set $ties (call $threshold_scalar (local.get $x) (i32.const 4) (local.get $t) (local.get $ties))))
          ;; |x| bits ≤ 0x7fffffff, so the signed compare orders them
          (else (v128.store (local.get $x) (v128.andnot (local.get $v) (i32x4.lt_s (local.get $a) (local.get $tv))))))
        (local.set $x (i32.add (local.get $x) (i32.const 16)))
        (br $loop)))
    (call $threshold_scalar (local.get $x) (i32.shr_u (i32.sub (local.get $end) (local.get $x)) (i32.const 2))
      (local.get $t) (local.get $ties)))

  (func $threshold_scalar (param $x i32) (param $n i32) (param $t i32) (param $ties i32) (result i32)
    (local $end i32) (local $a i32)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (block $done
      (loop $loop
        (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
        (local.set $a (i32.and (i32.load (local.get $x)) (i32.const 0x7fffffff)))
        (if (i32.lt_u (local.get $a) (local.get $t))
          (then (i32.store (local.get $x) (i32.const 0)))
          (else
            (if (i32.and (i32.eq (local.get $a) (local.get $t)) (i32.gt_s (local.get $ties) (i32.const 0)))
              (then
                (i32.store (local.get $x) (i32.const 0))
                (local.set $ties (i32.sub (local.get $ties) (i32.const 1)))))))
        (local.set $x (i32.add (local.get $x) (i32.const 4)))
        (br $loop)))
    (local.get $ties))

  ;; N:M pruning down the first `cols` columns (a multiple of 4) of rows of `row_len` floats (rows a
  ;; whole number of groups of m): in each group of m rows a weight is kept when its rank is below n,
  ;; the rank counting the group's larger |w| and its equal |w| at earlier rows (so ties keep the
  ;; earlier row). out = x or +0.
  (func (export "prune_nm_columns")
    (param $x i32) (param $out i32) (param $rows i32) (param $cols i32) (param $row_len i32) (param $n i32)
    (param $m i32)
    (local $g i32) (local $c i32) (local $i i32) (local $j i32) (local $stride i32) (local $base i32)
    (local $ai v128) (local $aj v128) (local $rank v128) (local $nv v128)
    (local.set $stride (i32.shl (local.get $row_len) (i32.const 2)))
    (local.set $nv (i32x4.splat (local.get $n)))
    (block $groups_done
      (loop $groups
        (br_if $groups_done (i32.ge_u (local.get $g) (local.get $rows)))
        (local.set $c (i32.const 0))
        (block $cols_done
          (loop $columns
            (br_if $cols_done (i32.ge_u (local.get $c) (local.get $cols)))
            ;; byte offset of (row g, column c)
            (local.set $base (i32.add (i32.mul (local.get $g) (local.get $stride)) (i32.shl (local.get $c) (i32.const 2))))
            (local.set $i (i32.const 0))
            (block $rows_done
              (loop $row_i
                (br_if $rows_done (i32.ge_u (local.get $i) (local.get $m)))
                (local.set $ai (f32x4.abs (v128.load (i32.add (local.get $x)
                  (i32.add (local.get $base) (i32.mul (local.get $i) (local.get $stride)))))))
                (local.set $rank (v128.const i32x4 0 0 0 0))
                (local.set $j (i32.const 0))
                (block $others_done
                  (loop $row_j
                    (br_if $others_done (i32.ge_u (local.get $j) (local.get $m)))
                    (local.set $aj (f32x4.abs (v128.load (i32.add (local.get $x)
                      (i32.add (local.get $base) (i32.mul (local.get $j) (local.get $stride)))))))
                    ;; compare masks are −1 where true: subtracting counts them
                    (if (i32.lt_u (local.get $j) (local.get $i))
                      (then (local.set $rank (i32x4.sub (local.get $rank) (f32x4.ge (local.get $aj) (local.get $ai)))))
                      (else (if (i32.gt_u (local.get $j) (local.get $i))
                        (then (local.set $rank (i32x4.sub (local.get $rank) (f32x4.gt (local.get $aj) (local.get $ai))))))))
                    (local.set $j (i32.add (local.get $j) (i32.const 1)))
                    (br $row_j)))
                (v128.store (i32.add (local.get $out) (i32.add (local.get $base) (i32.mul (local.get $i) (local.get $stride))))
                  (v128.and
                    (v128.load (i32.add (local.get $x) (i32.add (local.get $base) (i32.mul (local.get $i) (local.get $stride)))))
                    (i32x4.lt_s (local.get $rank) (local.get $nv))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $row_i)))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $columns)))
        (local.set $g (i32.add (local.get $g) (local.get $m)))
        (br $groups))))

  (func $pmin (param $a f32) (param $b f32) (result f32)
    (select (local.get $b) (local.get $a) (f32.lt (local.get $b) (local.get $a))))

  (func $pmax (param $a f32) (param $b f32) (result f32)
    (select (local.get $b) (local.get $a) (f32.lt (local.get $a) (local.get $b))))
)
