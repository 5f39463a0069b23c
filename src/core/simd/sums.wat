;; Float64 sums over float32 tensors: the quantizers' error statistics, fused into the encode (the
;; error of each code against the value it came from, without decoding a whole tensor back to
;; float32), and a tensor's moments for its summary statistics. Source of truth for sums-wasm.ts
;; (regenerate with `npm run build:wasm`; a test checks the two agree).
;;
;; A module of its own because kernels.wat stays under the 4 KB that old Chrome compiled synchronously
;; on the main thread; it imports kernels.wat's memory, so it reads the rows and codes a staged block
;; (./index.ts, stageColumnBlock and quantizeStagedBlock) or a staged chunk left there, with no copy.
(module
  (import "env" "memory" (memory 1))

  ;; res (float64[4]) += [Σ x², Σ (x − d)², max |x − d| (NaN ignored), #{d = 0}] over a row-major
  ;; [rows, cols] block, where d[r][c] = ((q[r][c] xor qxor) − zero[c]) · scale[c] in float32 (what the
  ;; decode computes: a small integer times a float32 rounds once) and the sums run in float64 as
  ;; error_stats does. q are bytes; qxor = 128 turns int8 two's complement into code + 128.
  (func (export "column_code_errors")
    (param $x i32) (param $q i32) (param $rows i32) (param $cols i32) (param $scale i32) (param $zero i32)
    (param $qxor i32) (param $res i32)
    (local $r i32) (local $c i32) (local $p i32) (local $vec_end i32) (local $xorv v128)
    (local $vx v128) (local $d v128) (local $xa v128) (local $xb v128) (local $ea v128) (local $eb v128)
    (local $signal v128) (local $noise v128) (local $max v128) (local $zeros v128)
    (local $sx f64) (local $se f64) (local $sd f32) (local $s_signal f64) (local $s_noise f64) (local $s_max f64)
    (local $s_zeros i32)
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
            (local.set $vx (v128.load (i32.add (local.get $x) (local.get $p))))
            ;; four code bytes widened to i32, xor'ed, to float, minus the zero point, times the scale
            (local.set $d
              (f32x4.mul
                (f32x4.sub
                  (f32x4.convert_i32x4_s
                    (v128.xor (local.get $xorv)
                      (i32x4.extend_low_i16x8_u (i16x8.extend_low_i8x16_u
                        (v128.load32_zero (i32.add (local.get $q) (local.get $c)))))))
                  (v128.load (i32.add (local.get $zero) (local.get $p))))
                (v128.load (i32.add (local.get $scale) (local.get $p)))))
            (local.set $xa (f64x2.promote_low_f32x4 (local.get $vx)))
            (local.set $xb (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $vx) (local.get $vx))))
            (local.set $ea (f64x2.sub (local.get $xa) (f64x2.promote_low_f32x4 (local.get $d))))
            (local.set $eb (f64x2.sub (local.get $xb) (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $d) (local.get $d)))))
            (local.set $signal (f64x2.add (local.get $signal)
              (f64x2.add (f64x2.mul (local.get $xa) (local.get $xa)) (f64x2.mul (local.get $xb) (local.get $xb)))))
            (local.set $noise (f64x2.add (local.get $noise)
              (f64x2.add (f64x2.mul (local.get $ea) (local.get $ea)) (f64x2.mul (local.get $eb) (local.get $eb)))))
            (local.set $max
              (f64x2.pmax (f64x2.pmax (local.get $max) (f64x2.abs (local.get $ea))) (f64x2.abs (local.get $eb))))
            (local.set $zeros (i32x4.sub (local.get $zeros) (f32x4.eq (local.get $d) (v128.const f32x4 0 0 0 0))))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $vec_loop)))
        (block $tail_done
          (loop $tail_loop
            (br_if $tail_done (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $p (i32.shl (local.get $c) (i32.const 2)))
            (local.set $sd
              (f32.mul
                (f32.sub
                  (f32.convert_i32_s (i32.xor (local.get $qxor) (i32.load8_u (i32.add (local.get $q) (local.get $c)))))
                  (f32.load (i32.add (local.get $zero) (local.get $p))))
                (f32.load (i32.add (local.get $scale) (local.get $p)))))
            (local.set $sx (f64.promote_f32 (f32.load (i32.add (local.get $x) (local.get $p)))))
            (local.set $se (f64.abs (f64.sub (local.get $sx) (f64.promote_f32 (local.get $sd)))))
            (local.set $s_signal (f64.add (local.get $s_signal) (f64.mul (local.get $sx) (local.get $sx))))
            (local.set $s_noise (f64.add (local.get $s_noise) (f64.mul (local.get $se) (local.get $se))))
            (local.set $s_max
              (select (local.get $se) (local.get $s_max) (f64.lt (local.get $s_max) (local.get $se))))
            (local.set $s_zeros (i32.add (local.get $s_zeros) (f32.eq (local.get $sd) (f32.const 0))))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $tail_loop)))
        (local.set $x (i32.add (local.get $x) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $q (i32.add (local.get $q) (local.get $cols)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_loop)))
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
        (i32.add (i32x4.extract_lane 2 (local.get $zeros)) (i32x4.extract_lane 3 (local.get $zeros)))))))))

  ;; res (float64[5]) = [min, max (NaN ignored), #{x = 0}, Σ x, Σ (x − mean)²] of x[0..n), n ≥ 1, where
  ;; mean = Σ x / n: two sweeps over a chunk that stays in cache, so the squares are taken about the
  ;; chunk's own mean (no cancellation); the caller merges chunks (Chan et al.'s pairwise update)
  (func (export "moments") (param $x i32) (param $n i32) (param $res i32)
    (local $p i32) (local $end i32) (local $vec_end i32) (local $v v128) (local $lo v128) (local $hi v128)
    (local $zeros v128) (local $sum v128) (local $m2 v128) (local $meanv v128) (local $a v128) (local $b v128)
    (local $s f32) (local $slo f32) (local $shi f32) (local $ssum f64) (local $sm2 f64) (local $szeros i32)
    (local $mean f64) (local $d f64)
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vec_end (i32.add (local.get $x) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (local.set $lo (v128.const f32x4 inf inf inf inf))
    (local.set $hi (v128.const f32x4 -inf -inf -inf -inf))
    (local.set $p (local.get $x))
    (block $vec_done
      (loop $vec_loop
        (br_if $vec_done (i32.ge_u (local.get $p) (local.get $vec_end)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $lo (f32x4.pmin (local.get $lo) (local.get $v)))
        (local.set $hi (f32x4.pmax (local.get $hi) (local.get $v)))
        (local.set $zeros (i32x4.sub (local.get $zeros) (f32x4.eq (local.get $v) (v128.const f32x4 0 0 0 0))))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.add (f64x2.promote_low_f32x4 (local.get $v))
          (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $vec_loop)))
    (local.set $slo (call $pmin
      (call $pmin (f32x4.extract_lane 0 (local.get $lo)) (f32x4.extract_lane 1 (local.get $lo)))
      (call $pmin (f32x4.extract_lane 2 (local.get $lo)) (f32x4.extract_lane 3 (local.get $lo)))))
    (local.set $shi (call $pmax
      (call $pmax (f32x4.extract_lane 0 (local.get $hi)) (f32x4.extract_lane 1 (local.get $hi)))
      (call $pmax (f32x4.extract_lane 2 (local.get $hi)) (f32x4.extract_lane 3 (local.get $hi)))))
    (local.set $szeros (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $zeros)) (i32x4.extract_lane 1 (local.get $zeros)))
      (i32.add (i32x4.extract_lane 2 (local.get $zeros)) (i32x4.extract_lane 3 (local.get $zeros)))))
    (local.set $ssum (f64.add (f64x2.extract_lane 0 (local.get $sum)) (f64x2.extract_lane 1 (local.get $sum))))
    (block $tail_done
      (loop $tail_loop
        (br_if $tail_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $s (f32.load (local.get $p)))
        (local.set $slo (call $pmin (local.get $slo) (local.get $s)))
        (local.set $shi (call $pmax (local.get $shi) (local.get $s)))
        (local.set $szeros (i32.add (local.get $szeros) (f32.eq (local.get $s) (f32.const 0))))
        (local.set $ssum (f64.add (local.get $ssum) (f64.promote_f32 (local.get $s))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $tail_loop)))
    (local.set $mean (f64.div (local.get $ssum) (f64.convert_i32_u (local.get $n))))
    (local.set $meanv (f64x2.splat (local.get $mean)))
    (local.set $p (local.get $x))
    (block $vec2_done
      (loop $vec2_loop
        (br_if $vec2_done (i32.ge_u (local.get $p) (local.get $vec_end)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $a (f64x2.sub (f64x2.promote_low_f32x4 (local.get $v)) (local.get $meanv)))
        (local.set $b (f64x2.sub (f64x2.promote_low_f32x4
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))) (local.get $meanv)))
        (local.set $m2 (f64x2.add (local.get $m2)
          (f64x2.add (f64x2.mul (local.get $a) (local.get $a)) (f64x2.mul (local.get $b) (local.get $b)))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $vec2_loop)))
    (local.set $sm2 (f64.add (f64x2.extract_lane 0 (local.get $m2)) (f64x2.extract_lane 1 (local.get $m2))))
    (block $tail2_done
      (loop $tail2_loop
        (br_if $tail2_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $d (f64.sub (f64.promote_f32 (f32.load (local.get $p))) (local.get $mean)))
        (local.set $sm2 (f64.add (local.get $sm2) (f64.mul (local.get $d) (local.get $d))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $tail2_loop)))
    (f64.store (local.get $res) (f64.promote_f32 (local.get $slo)))
    (f64.store offset=8 (local.get $res) (f64.promote_f32 (local.get $shi)))
    (f64.store offset=16 (local.get $res) (f64.convert_i32_u (local.get $szeros)))
    (f64.store offset=24 (local.get $res) (local.get $ssum))
    (f64.store offset=32 (local.get $res) (local.get $sm2)))

  (func $pmin (param $a f32) (param $b f32) (result f32)
    (select (local.get $b) (local.get $a) (f32.lt (local.get $b) (local.get $a))))

  (func $pmax (param $a f32) (param $b f32) (result f32)
    (select (local.get $b) (local.get $a) (f32.lt (local.get $a) (local.get $b))))
)
