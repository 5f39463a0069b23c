;; WebAssembly SIMD kernels for calibration: the dense product of the second-order methods (the
;; Cholesky factor of a layer Hessian, GPTQ's and SparseGPT's lazy-batch updates) and the per-feature
;; statistics of captured activations. Source of truth for dense-wasm.ts (regenerate with
;; `npm run build:wasm`; a test checks the two agree).
;;
;; gemm_sub: C[m, n] −= A[m, p] · B[p, n], float32, every matrix row-major with its own row stride;
;; pointers and strides in bytes. Two rows of C by sixteen columns at a time: eight accumulators, so
;; each row of B loaded (four vectors) serves two rows of A, and C is read and written once per tile,
;; after the whole sum over p. Column tails go four at a time, then one; an odd last row runs the
;; two-row tile with both rows the same and stores only one.
(module
  (memory (export "memory") 1)

  (func (export "gemm_sub")
    (param $c i32) (param $ldc i32) (param $a i32) (param $lda i32) (param $b i32) (param $ldb i32)
    (param $m i32) (param $n i32) (param $p i32)
    (local $i i32) (local $j i32) (local $t i32) (local $two i32)
    (local $a0 i32) (local $a1 i32) (local $c0 i32) (local $c1 i32)
    (local $pa0 i32) (local $pa1 i32) (local $pb i32) (local $n16 i32) (local $n4 i32)
    (local $x0 v128) (local $x1 v128) (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128)
    (local $s00 v128) (local $s01 v128) (local $s02 v128) (local $s03 v128)
    (local $s10 v128) (local $s11 v128) (local $s12 v128) (local $s13 v128)
    (local $f0 f32) (local $f1 f32)
    ;; column limits in bytes: whole tiles of 16, then of 4
    (local.set $n16 (i32.shl (i32.and (local.get $n) (i32.const -16)) (i32.const 2)))
    (local.set $n4 (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2)))
    (local.set $i (i32.const 0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $i) (local.get $m)))
        (local.set $two (i32.lt_u (i32.add (local.get $i) (i32.const 1)) (local.get $m)))
        (local.set $a0 (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $lda))))
        (local.set $c0 (i32.add (local.get $c) (i32.mul (local.get $i) (local.get $ldc))))
        (local.set $a1 (select (i32.add (local.get $a0) (local.get $lda)) (local.get $a0) (local.get $two)))
        (local.set $c1 (select (i32.add (local.get $c0) (local.get $ldc)) (local.get $c0) (local.get $two)))
        ;; tiles of 2 × 16
        (local.set $j (i32.const 0))
        (block $wide_done
          (loop $wide
            (br_if $wide_done (i32.ge_u (local.get $j) (local.get $n16)))
            (local.set $s00 (v128.const i32x4 0 0 0 0))
            (local.set $s01 (v128.const i32x4 0 0 0 0))
            (local.set $s02 (v128.const i32x4 0 0 0 0))
            (local.set $s03 (v128.const i32x4 0 0 0 0))
            (local.set $s10 (v128.const i32x4 0 0 0 0))
            (local.set $s11 (v128.const i32x4 0 0 0 0))
            (local.set $s12 (v128.const i32x4 0 0 0 0))
            (local.set $s13 (v128.const i32x4 0 0 0 0))
            (local.set $pa0 (local.get $a0))
            (local.set $pa1 (local.get $a1))
            (local.set $pb (i32.add (local.get $b) (local.get $j)))
            (local.set $t (local.get $p))
            (block $sum_done
              (loop $sum
                (br_if $sum_done (i32.eqz (local.get $t)))
                (local.set $x0 (f32x4.splat (f32.load (local.get $pa0))))
                (local.set $x1 (f32x4.splat (f32.load (local.get $pa1))))
                (local.set $b0 (v128.load (local.get $pb)))
                (local.set $b1 (v128.load offset=16 (local.get $pb)))
                (local.set $b2 (v128.load offset=32 (local.get $pb)))
                (local.set $b3 (v128.load offset=48 (local.get $pb)))
                (local.set $s00 (f32x4.add (local.get $s00) (f32x4.mul (local.get $x0) (local.get $b0))))
                (local.set $s01 (f32x4.add (local.get $s01) (f32x4.mul (local.get $x0) (local.get $b1))))
                (local.set $s02 (f32x4.add (local.get $s02) (f32x4.mul (local.get $x0) (local.get $b2))))
                (local.set $s03 (f32x4.add (local.get $s03) (f32x4.mul (local.get $x0) (local.get $b3))))
                (local.set $s10 (f32x4.add (local.get $s10) (f32x4.mul (local.get $x1) (local.get $b0))))
                (local.set $s11 (f32x4.add (local.get $s11) (f32x4.mul (local.get $x1) (local.get $b1))))
                (local.set $s12 (f32x4.add (local.get $s12) (f32x4.mul (local.get $x1) (local.get $b2))))
                (local.set $s13 (f32x4.add (local.get $s13) (f32x4.mul (local.get $x1) (local.get $b3))))
                (local.set $pa0 (i32.add (local.get $pa0) (i32.const 4)))
                (local.set $pa1 (i32.add (local.get $pa1) (i32.const 4)))
                (local.set $pb (i32.add (local.get $pb) (local.get $ldb)))
                (local.set $t (i32.sub (local.get $t) (i32.const 1)))
                (br $sum)))
            ;; row 1 first: when the rows are the same (odd last row), row 0's store is the one that stays
            (local.set $pa1 (i32.add (local.get $c1) (local.get $j)))
            (v128.store (local.get $pa1) (f32x4.sub (v128.load (local.get $pa1)) (local.get $s10)))
            (v128.store offset=16 (local.get $pa1) (f32x4.sub (v128.load offset=16 (local.get $pa1)) (local.get $s11)))
            (v128.store offset=32 (local.get $pa1) (f32x4.sub (v128.load offset=32 (local.get $pa1)) (local.get $s12)))
            (v128.store offset=48 (local.get $pa1) (f32x4.sub (v128.load offset=48 (local.get $pa1)) (local.get $s13)))
            (local.set $pa0 (i32.add (local.get $c0) (local.get $j)))
            (if (local.get $two)
              (then
                (v128.store (local.get $pa0) (f32x4.sub (v128.load (local.get $pa0)) (local.get $s00)))
                (v128.store offset=16 (local.get $pa0) (f32x4.sub (v128.load offset=16 (local.get $pa0)) (local.get $s01)))
                (v128.store offset=32 (local.get $pa0) (f32x4.sub (v128.load offset=32 (local.get $pa0)) (local.get $s02)))
                (v128.store offset=48 (local.get $pa0) (f32x4.sub (v128.load offset=48 (local.get $pa0)) (local.get $s03)))))
            (local.set $j (i32.add (local.get $j) (i32.const 64)))
            (br $wide)))
        ;; tiles of 2 × 4
        (block $narrow_done
          (loop $narrow
            (br_if $narrow_done (i32.ge_u (local.get $j) (local.get $n4)))
            (local.set $s00 (v128.const i32x4 0 0 0 0))
            (local.set $s10 (v128.const i32x4 0 0 0 0))
            (local.set $pa0 (local.get $a0))
            (local.set $pa1 (local.get $a1))
            (local.set $pb (i32.add (local.get $b) (local.get $j)))
            (local.set $t (local.get $p))
            (block $sum4_done
              (loop $sum4
                (br_if $sum4_done (i32.eqz (local.get $t)))
                (local.set $b0 (v128.load (local.get $pb)))
                (local.set $s00 (f32x4.add (local.get $s00)
                  (f32x4.mul (f32x4.splat (f32.load (local.get $pa0))) (local.get $b0))))
                (local.set $s10 (f32x4.add (local.get $s10)
                  (f32x4.mul (f32x4.splat (f32.load (local.get $pa1))) (local.get $b0))))
                (local.set $pa0 (i32.add (local.get $pa0) (i32.const 4)))
                (local.set $pa1 (i32.add (local.get $pa1) (i32.const 4)))
                (local.set $pb (i32.add (local.get $pb) (local.get $ldb)))
                (local.set $t (i32.sub (local.get $t) (i32.const 1)))
                (br $sum4)))
            (local.set $pa1 (i32.add (local.get $c1) (local.get $j)))
            (v128.store (local.get $pa1) (f32x4.sub (v128.load (local.get $pa1)) (local.get $s10)))
            (local.set $pa0 (i32.add (local.get $c0) (local.get $j)))
            (if (local.get $two)
              (then (v128.store (local.get $pa0) (f32x4.sub (v128.load (local.get $pa0)) (local.get $s00)))))
            (local.set $j (i32.add (local.get $j) (i32.const 16)))
            (br $narrow)))
        ;; single columns
        (block $tail_done
          (loop $tail
            (br_if $tail_done (i32.ge_u (local.get $j) (i32.shl (local.get $n) (i32.const 2))))
            (local.set $f0 (f32.const 0))
            (local.set $f1 (f32.const 0))
            (local.set $pa0 (local.get $a0))
            (local.set $pa1 (local.get $a1))
            (local.set $pb (i32.add (local.get $b) (local.get $j)))
            (local.set $t (local.get $p))
            (block $sum1_done
              (loop $sum1
                (br_if $sum1_done (i32.eqz (local.get $t)))
                (local.set $f0 (f32.add (local.get $f0) (f32.mul (f32.load (local.get $pa0)) (f32.load (local.get $pb)))))
                (local.set $f1 (f32.add (local.get $f1) (f32.mul (f32.load (local.get $pa1)) (f32.load (local.get $pb)))))
                (local.set $pa0 (i32.add (local.get $pa0) (i32.const 4)))
                (local.set $pa1 (i32.add (local.get $pa1) (i32.const 4)))
                (local.set $pb (i32.add (local.get $pb) (local.get $ldb)))
                (local.set $t (i32.sub (local.get $t) (i32.const 1)))
                (br $sum1)))
            (local.set $pa1 (i32.add (local.get $c1) (local.get $j)))
            (f32.store (local.get $pa1) (f32.sub (f32.load (local.get $pa1)) (local.get $f1)))
            (local.set $pa0 (i32.add (local.get $c0) (local.get $j)))
            (if (local.get $two)
              (then (f32.store (local.get $pa0) (f32.sub (f32.load (local.get $pa0)) (local.get $f0)))))
            (local.set $j (i32.add (local.get $j) (i32.const 4)))
            (br $tail)))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $rows))))

  ;; activation_stats: for x [rows, k] float32, sumsq[j] += Σ x[r][j]² in float64 (each square exact),
  ;; absmax[j] = max(absmax[j], |x[r][j]|), range[0] / range[1] = min / max over all of x, and
  ;; hist[bits(x) >> 19] += 1 (u32 counts) for every element. Four features per step; a tail of k
  ;; not a multiple of four one at a time. NaN propagates into sumsq (the caller checks it there).
  (func (export "activation_stats")
    (param $x i32) (param $rows i32) (param $k i32) (param $sumsq i32) (param $absmax i32)
    (param $range i32) (param $hist i32)
    (local $r i32) (local $j i32) (local $px i32) (local $k4 i32) (local $end i32) (local $at i32)
    (local $v v128) (local $lo v128) (local $hi v128) (local $f f32) (local $d f64)
    (local.set $k4 (i32.and (local.get $k) (i32.const -4)))
    (local.set $lo (f32x4.splat (f32.load (local.get $range))))
    (local.set $hi (f32x4.splat (f32.load offset=4 (local.get $range))))
    (local.set $px (local.get $x))
    (local.set $r (i32.const 0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $j (i32.const 0))
        (block $quad_done
          (loop $quad
            (br_if $quad_done (i32.ge_u (local.get $j) (local.get $k4)))
            (local.set $v (v128.load (local.get $px)))
            (local.set $at (i32.add (local.get $absmax) (i32.shl (local.get $j) (i32.const 2))))
            (v128.store (local.get $at) (f32x4.max (v128.load (local.get $at)) (f32x4.abs (local.get $v))))
            (local.set $lo (f32x4.min (local.get $lo) (local.get $v)))
            (local.set $hi (f32x4.max (local.get $hi) (local.get $v)))
            (local.set $at (i32.add (local.get $sumsq) (i32.shl (local.get $j) (i32.const 3))))
            (v128.store (local.get $at) (f64x2.add (v128.load (local.get $at))
              (f64x2.mul (f64x2.promote_low_f32x4 (local.get $v)) (f64x2.promote_low_f32x4 (local.get $v)))))
            (local.set $v (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v)))
            (v128.store offset=16 (local.get $at) (f64x2.add (v128.load offset=16 (local.get $at))
              (f64x2.mul (f64x2.promote_low_f32x4 (local.get $v)) (f64x2.promote_low_f32x4 (local.get $v)))))
            (local.set $px (i32.add (local.get $px) (i32.const 16)))
            (local.set $j (i32.add (local.get $j) (i32.const 4)))
            (br $quad)))
        (block $tail_done
          (loop $tail
            (br_if $tail_done (i32.ge_u (local.get $j) (local.get $k)))
            (local.set $f (f32.load (local.get $px)))
            (local.set $at (i32.add (local.get $absmax) (i32.shl (local.get $j) (i32.const 2))))
            (f32.store (local.get $at) (f32.max (f32.load (local.get $at)) (f32.abs (local.get $f))))
            (local.set $lo (f32x4.min (local.get $lo) (f32x4.splat (local.get $f))))
            (local.set $hi (f32x4.max (local.get $hi) (f32x4.splat (local.get $f))))
            (local.set $at (i32.add (local.get $sumsq) (i32.shl (local.get $j) (i32.const 3))))
            (local.set $d (f64.promote_f32 (local.get $f)))
            (f64.store (local.get $at) (f64.add (f64.load (local.get $at)) (f64.mul (local.get $d) (local.get $d))))
            (local.set $px (i32.add (local.get $px) (i32.const 4)))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $tail)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows)))
    ;; the four lanes' extremes into range
    (local.set $lo (f32x4.min (local.get $lo) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $lo) (local.get $lo))))
    (local.set $lo (f32x4.min (local.get $lo) (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $lo) (local.get $lo))))
    (local.set $hi (f32x4.max (local.get $hi) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $hi) (local.get $hi))))
    (local.set $hi (f32x4.max (local.get $hi) (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $hi) (local.get $hi))))
    (f32.store (local.get $range) (f32x4.extract_lane 0 (local.get $lo)))
    (f32.store offset=4 (local.get $range) (f32x4.extract_lane 0 (local.get $hi)))
    ;; the histogram: one count per element, by its bits' top 13
    (local.set $end (local.get $px))
    (local.set $px (local.get $x))
    (block $hist_done
      (loop $count
        (br_if $hist_done (i32.ge_u (local.get $px) (local.get $end)))
        (local.set $at (i32.add (local.get $hist)
          (i32.shl (i32.shr_u (i32.load (local.get $px)) (i32.const 19)) (i32.const 2))))
        (i32.store (local.get $at) (i32.add (i32.load (local.get $at)) (i32.const 1)))
        (local.set $px (i32.add (local.get $px) (i32.const 4)))
        (br $count)))))
