;; WebAssembly SIMD matrix product for the training engine. Source of truth for matmul-wasm.ts
;; (regenerate with `npm run build:wasm`; a test checks the two agree).
;;
;; gemm: c[M4, N8] += a' · b (c = a' · b when $accumulate is 0), float32, pointers and strides in
;; bytes into this module's memory, where a'[i][k] is read at a + i·ras + k·cas: a row-major a[M, K] has
;; ras = 4K, cas = 4, and the transposed operand of a weight gradient (aᵀ of a row-major [K', M'] array)
;; has ras = 4, cas = 4M' — so Aᵀ·B needs no transposed copy. b [K, N8] comes packed in column panels
;; of 8: panel p (columns 8p…8p+7) is K rows of 8 floats at b + 32·K·p, so a tile's walk down k reads
;; one contiguous stream (≤ 64 KiB for K ≤ 2048) whatever N is. c is row-major with rows of N8 floats
;; (N8 a multiple of 8, M4 a multiple of 4: the JS side pads, and ignores what the padding computes).
;;
;; The product runs in register tiles of 4 rows × 8 columns of c (eight f32x4 accumulators): per step
;; of k, two vector loads of b and four splat loads of a' feed sixteen lane-wide multiply-adds, and c
;; is read and written once per tile, not once per k. Tiles sweep down one column panel of b at a time
;; so it stays in L1 while a' streams from L2.
(module
  (memory (export "memory") 1)

  (func (export "gemm")
    (param $a i32) (param $ras i32) (param $cas i32) (param $b i32) (param $c i32)
    (param $M4 i32) (param $K i32) (param $N8 i32) (param $accumulate i32)
    (local $ldb i32) (local $i i32) (local $j i32) (local $k i32)
    (local $pa i32) (local $pb i32) (local $pc i32)
    (local $ras2 i32) (local $ras3 i32) (local $ldc2 i32) (local $ldc3 i32) (local $ldc1 i32) (local $ras1 i32)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128) (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local $b0 v128) (local $b1 v128) (local $av v128)
    (local.set $ldb (i32.shl (local.get $N8) (i32.const 2)))
    (local.set $ras1 (local.get $ras))
    (local.set $ras2 (i32.shl (local.get $ras) (i32.const 1)))
    (local.set $ras3 (i32.add (local.get $ras2) (local.get $ras)))
    (local.set $ldc1 (local.get $ldb))
    (local.set $ldc2 (i32.shl (local.get $ldb) (i32.const 1)))
    (local.set $ldc3 (i32.add (local.get $ldc2) (local.get $ldb)))
    (local.set $j (i32.const 0))
    (block $cols_done
      (loop $cols
        (br_if $cols_done (i32.ge_u (local.get $j) (local.get $ldb)))
        (local.set $i (i32.const 0))
        (block $rows_done
          (loop $rows
            (br_if $rows_done (i32.ge_u (local.get $i) (local.get $M4)))
            (local.set $c00 (v128.const i32x4 0 0 0 0))
            (local.set $c01 (v128.const i32x4 0 0 0 0))
            (local.set $c10 (v128.const i32x4 0 0 0 0))
            (local.set $c11 (v128.const i32x4 0 0 0 0))
            (local.set $c20 (v128.const i32x4 0 0 0 0))
            (local.set $c21 (v128.const i32x4 0 0 0 0))
            (local.set $c30 (v128.const i32x4 0 0 0 0))
            (local.set $c31 (v128.const i32x4 0 0 0 0))
            (local.set $pa (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $ras))))
            (local.set $pb (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $K))))
            (local.set $k (local.get $K))
            (block $k_done
              (loop $ks
                (br_if $k_done (i32.eqz (local.get $k)))
                (local.set $b0 (v128.load (local.get $pb)))
                (local.set $b1 (v128.load offset=16 (local.get $pb)))
                (local.set $av (v128.load32_splat (local.get $pa)))
                (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $av) (local.get $b0))))
                (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $av) (local.get $b1))))
                (local.set $av (v128.load32_splat (i32.add (local.get $pa) (local.get $ras1))))
                (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $av) (local.get $b0))))
                (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $av) (local.get $b1))))
                (local.set $av (v128.load32_splat (i32.add (local.get $pa) (local.get $ras2))))
                (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $av) (local.get $b0))))
                (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $av) (local.get $b1))))
                (local.set $av (v128.load32_splat (i32.add (local.get $pa) (local.get $ras3))))
                (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $av) (local.get $b0))))
                (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $av) (local.get $b1))))
                (local.set $pa (i32.add (local.get $pa) (local.get $cas)))
                (local.set $pb (i32.add (local.get $pb) (i32.const 32)))
                (local.set $k (i32.sub (local.get $k) (i32.const 1)))
                (br $ks)))
            (local.set $pc (i32.add (i32.add (local.get $c) (i32.mul (local.get $i) (local.get $ldb))) (local.get $j)))
            (if (local.get $accumulate)
              (then
              (v128.store (local.get $pc) (f32x4.add (v128.load (local.get $pc)) (local.get $c00)))
              (v128.store offset=16 (local.get $pc) (f32x4.add (v128.load offset=16 (local.get $pc)) (local.get $c01)))
              (v128.store (i32.add (local.get $pc) (local.get $ldc1)) (f32x4.add (v128.load (i32.add (local.get $pc) (local.get $ldc1))) (local.get $c10)))
              (v128.store offset=16 (i32.add (local.get $pc) (local.get $ldc1)) (f32x4.add (v128.load offset=16 (i32.add (local.get $pc) (local.get $ldc1))) (local.get $c11)))
              (v128.store (i32.add (local.get $pc) (local.get $ldc2)) (f32x4.add (v128.load (i32.add (local.get $pc) (local.get $ldc2))) (local.get $c20)))
              (v128.store offset=16 (i32.add (local.get $pc) (local.get $ldc2)) (f32x4.add (v128.load offset=16 (i32.add (local.get $pc) (local.get $ldc2))) (local.get $c21)))
              (v128.store (i32.add (local.get $pc) (local.get $ldc3)) (f32x4.add (v128.load (i32.add (local.get $pc) (local.get $ldc3))) (local.get $c30)))
              (v128.store offset=16 (i32.add (local.get $pc) (local.get $ldc3)) (f32x4.add (v128.load offset=16 (i32.add (local.get $pc) (local.get $ldc3))) (local.get $c31)))
              )
              (else
              (v128.store (local.get $pc) (local.get $c00))
              (v128.store offset=16 (local.get $pc) (local.get $c01))
              (v128.store (i32.add (local.get $pc) (local.get $ldc1)) (local.get $c10))
              (v128.store offset=16 (i32.add (local.get $pc) (local.get $ldc1)) (local.get $c11))
              (v128.store (i32.add (local.get $pc) (local.get $ldc2)) (local.get $c20))
              (v128.store offset=16 (i32.add (local.get $pc) (local.get $ldc2)) (local.get $c21))
              (v128.store (i32.add (local.get $pc) (local.get $ldc3)) (local.get $c30))
              (v128.store offset=16 (i32.add (local.get $pc) (local.get $ldc3)) (local.get $c31))
              ))
            (local.set $i (i32.add (local.get $i) (i32.const 4)))
            (br $rows)))
        (local.set $j (i32.add (local.get $j) (i32.const 32)))
        (br $cols)))))
