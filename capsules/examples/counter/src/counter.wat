;; counter: a JSON entry point backed by the kv capability.
;;
;; `increment` reads the 8-byte little-endian counter under key "n", adds one,
;; stores it and returns the new value as a JSON number (ASCII decimal).
(module
  (import "hypermesh" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "hypermesh" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "n")

  (func (export "hm_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $len)) (i32.const 65536)) (then unreachable))
    (global.set $heap (i32.add (local.get $ptr) (local.get $len)))
    (local.get $ptr))

  (func (export "increment") (param $ptr i32) (param $len i32) (result i64)
    (local $n i64) (local $pos i32) (local $digits i32)
    ;; value buffer at 16..24; -1 (missing) leaves it zero
    (i64.store (i32.const 16) (i64.const 0))
    (drop (call $kv_get (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 8)))
    (local.set $n (i64.add (i64.load (i32.const 16)) (i64.const 1)))
    (i64.store (i32.const 16) (local.get $n))
    (drop (call $kv_set (i32.const 0) (i32.const 1) (i32.const 16) (i32.const 8)))
    ;; decimal digits, written backwards ending at 64
    (local.set $pos (i32.const 64))
    (loop $digit
      (local.set $pos (i32.sub (local.get $pos) (i32.const 1)))
      (i32.store8 (local.get $pos) (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10)))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $n) (i64.const 0))))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $pos)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (i32.const 64) (local.get $pos)))))
)
