;; WebAssembly SIMD matrix product for the training engine. Source of truth for matmul-wasm.ts
;; (regenerate with `npm run build:wasm`; a test checks the two agree).
;;
;; gemm: c[M, N4] += a[M, K] · b[K, N4], row-major float32, N4 a multiple of 4 (the JS side pads),
;; all pointers byte offsets into this module's memory. Four rows of b per pass over a row of c
;; (one load and one store of c for four multiply-adds), four columns per SIMD lane group.
(module
  (memory (export "memory") 1)

  (func (export "gemm")
    (param $a i32) (param $b i32) (param $c i32) (param $M i32) (param $K i32) (param $N4 i32)
    (local $row_bytes i32) (local $k4 i32) (local $i i32) (local $k i32) (local $j i32)
    (local $arow i32) (local $crow i32) (local $brow i32) (local $pc i32) (local $pb i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local.set $row_bytes (i32.shl (local.get $N4) (i32.const 2)))
    (local.set $k4 (i32.and (local.get $K) (i32.const -4)))
    (local.set $i (i32.const 0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $i) (local.get $M)))
        (local.set $arow (i32.add (local.get $a) (i32.shl (i32.mul (local.get $i) (local.get $K)) (i32.const 2))))
        (local.set $crow (i32.add (local.get $c) (i32.mul (local.get $i) (local.get $row_bytes))))
        (local.set $k (i32.const 0))
        ;; four rows of b at a time
        (block $quad_done
          (loop $quad
            (br_if $quad_done (i32.ge_u (local.get $k) (local.get $k4)))
            (local.set $pb (i32.add (local.get $arow) (i32.shl (local.get $k) (i32.const 2))))
            (local.set $a0 (f32x4.splat (f32.load (local.get $pb))))
            (local.set $a1 (f32x4.splat (f32.load offset=4 (local.get $pb))))
            (local.set $a2 (f32x4.splat (f32.load offset=8 (local.get $pb))))
            (local.set $a3 (f32x4.splat (f32.load offset=12 (local.get $pb))))
            (local.set $brow (i32.add (local.get $b) (i32.mul (local.get $k) (local.get $row_bytes))))
            (local.set $j (i32.const 0))
            (block $cols_done
              (loop $cols
                (br_if $cols_done (i32.ge_u (local.get $j) (local.get $row_bytes)))
                (local.set $pc (i32.add (local.get $crow) (local.get $j)))
                (local.set $pb (i32.add (local.get $brow) (local.get $j)))
                (v128.store (local.get $pc)
                  (f32x4.add
                    (v128.load (local.get $pc))
                    (f32x4.add
                      (f32x4.add
                        (f32x4.mul (local.get $a0) (v128.load (local.get $pb)))
                        (f32x4.mul (local.get $a1)
                          (v128.load (i32.add (local.get $pb) (local.get $row_bytes)))))
                      (f32x4.add
                        (f32x4.mul (local.get $a2)
                          (v128.load (i32.add (local.get $pb) (i32.shl (local.get $row_bytes) (i32.const 1)))))
                        (f32x4.mul (local.get $a3)
                          (v128.load (i32.add (local.get $pb) (i32.mul (local.get $row_bytes) (i32.const 3)))))))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $cols)))
            (local.set $k (i32.add (local.get $k) (i32.const 4)))
            (br $quad)))
        ;; the last K mod 4 rows of b one at a time
        (block $tail_done
          (loop $tail
            (br_if $tail_done (i32.ge_u (local.get $k) (local.get $K)))
            (local.set $a0
              (f32x4.splat (f32.load (i32.add (local.get $arow) (i32.shl (local.get $k) (i32.const 2))))))
            (local.set $brow (i32.add (local.get $b) (i32.mul (local.get $k) (local.get $row_bytes))))
            (local.set $j (i32.const 0))
            (block $tcols_done
              (loop $tcols
                (br_if $tcols_done (i32.ge_u (local.get $j) (local.get $row_bytes)))
                (local.set $pc (i32.add (local.get $crow) (local.get $j)))
                (v128.store (local.get $pc)
                  (f32x4.add (v128.load (local.get $pc))
                    (f32x4.mul (local.get $a0) (v128.load (i32.add (local.get $brow) (local.get $j))))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $tcols)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $tail)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rows))))
  ;; gemm with two rows of a (and c) per pass: each load of b feeds eight multiply-adds, not four.
  ;; Same contract as gemm; M odd leaves the last row to gemm.
  (func (export "gemm2")
    (param $a i32) (param $b i32) (param $c i32) (param $M i32) (param $K i32) (param $N4 i32)
    (local $row_bytes i32) (local $k4 i32) (local $i i32) (local $k i32) (local $j i32)
    (local $arow i32) (local $arow2 i32) (local $crow i32) (local $crow2 i32) (local $brow i32)
    (local $pb i32) (local $pc i32) (local $pc2 i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $e0 v128) (local $e1 v128) (local $e2 v128) (local $e3 v128)
    (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128)
    (local.set $row_bytes (i32.shl (local.get $N4) (i32.const 2)))
    (local.set $k4 (i32.and (local.get $K) (i32.const -4)))
    (local.set $i (i32.const 0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.gt_u (i32.add (local.get $i) (i32.const 2)) (local.get $M)))
        (local.set $arow (i32.add (local.get $a) (i32.shl (i32.mul (local.get $i) (local.get $K)) (i32.const 2))))
        (local.set $arow2 (i32.add (local.get $arow) (i32.shl (local.get $K) (i32.const 2))))
        (local.set $crow (i32.add (local.get $c) (i32.mul (local.get $i) (local.get $row_bytes))))
        (local.set $crow2 (i32.add (local.get $crow) (local.get $row_bytes)))
        (local.set $k (i32.const 0))
        (block $quad_done
          (loop $quad
            (br_if $quad_done (i32.ge_u (local.get $k) (local.get $k4)))
            (local.set $pb (i32.add (local.get $arow) (i32.shl (local.get $k) (i32.const 2))))
            (local.set $a0 (f32x4.splat (f32.load (local.get $pb))))
            (local.set $a1 (f32x4.splat (f32.load offset=4 (local.get $pb))))
            (local.set $a2 (f32x4.splat (f32.load offset=8 (local.get $pb))))
            (local.set $a3 (f32x4.splat (f32.load offset=12 (local.get $pb))))
            (local.set $pb (i32.add (local.get $arow2) (i32.shl (local.get $k) (i32.const 2))))
            (local.set $e0 (f32x4.splat (f32.load (local.get $pb))))
            (local.set $e1 (f32x4.splat (f32.load offset=4 (local.get $pb))))
            (local.set $e2 (f32x4.splat (f32.load offset=8 (local.get $pb))))
            (local.set $e3 (f32x4.splat (f32.load offset=12 (local.get $pb))))
            (local.set $brow (i32.add (local.get $b) (i32.mul (local.get $k) (local.get $row_bytes))))
            (local.set $j (i32.const 0))
            (block $cols_done
              (loop $cols
                (br_if $cols_done (i32.ge_u (local.get $j) (local.get $row_bytes)))
                (local.set $pb (i32.add (local.get $brow) (local.get $j)))
                (local.set $b0 (v128.load (local.get $pb)))
                (local.set $b1 (v128.load (i32.add (local.get $pb) (local.get $row_bytes))))
                (local.set $b2 (v128.load (i32.add (local.get $pb) (i32.shl (local.get $row_bytes) (i32.const 1)))))
                (local.set $b3 (v128.load (i32.add (local.get $pb) (i32.mul (local.get $row_bytes) (i32.const 3)))))
                (local.set $pc (i32.add (local.get $crow) (local.get $j)))
                (local.set $pc2 (i32.add (local.get $crow2) (local.get $j)))
                (v128.store (local.get $pc)
                  (f32x4.add (v128.load (local.get $pc))
                    (f32x4.add
                      (f32x4.add (f32x4.mul (local.get $a0) (local.get $b0)) (f32x4.mul (local.get $a1) (local.get $b1)))
                      (f32x4.add (f32x4.mul (local.get $a2) (local.get $b2)) (f32x4.mul (local.get $a3) (local.get $b3))))))
                (v128.store (local.get $pc2)
                  (f32x4.add (v128.load (local.get $pc2))
                    (f32x4.add
                      (f32x4.add (f32x4.mul (local.get $e0) (local.get $b0)) (f32x4.mul (local.get $e1) (local.get $b1)))
                      (f32x4.add (f32x4.mul (local.get $e2) (local.get $b2)) (f32x4.mul (local.get $e3) (local.get $b3))))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $cols)))
            (local.set $k (i32.add (local.get $k) (i32.const 4)))
            (br $quad)))
        (block $tail_done
          (loop $tail
            (br_if $tail_done (i32.ge_u (local.get $k) (local.get $K)))
            (local.set $a0
              (f32x4.splat (f32.load (i32.add (local.get $arow) (i32.shl (local.get $k) (i32.const 2))))))
            (local.set $e0
              (f32x4.splat (f32.load (i32.add (local.get $arow2) (i32.shl (local.get $k) (i32.const 2))))))
            (local.set $brow (i32.add (local.get $b) (i32.mul (local.get $k) (local.get $row_bytes))))
            (local.set $j (i32.const 0))
            (block $tcols_done
              (loop $tcols
                (br_if $tcols_done (i32.ge_u (local.get $j) (local.get $row_bytes)))
                (local.set $b0 (v128.load (i32.add (local.get $brow) (local.get $j))))
                (local.set $pc (i32.add (local.get $crow) (local.get $j)))
                (local.set $pc2 (i32.add (local.get $crow2) (local.get $j)))
                (v128.store (local.get $pc) (f32x4.add (v128.load (local.get $pc)) (f32x4.mul (local.get $a0) (local.get $b0))))
                (v128.store (local.get $pc2) (f32x4.add (v128.load (local.get $pc2)) (f32x4.mul (local.get $e0) (local.get $b0))))
                (local.set $j (i32.add (local.get $j) (i32.const 16)))
                (br $tcols)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $tail)))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $rows)))))
