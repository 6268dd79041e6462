;; echo: the smallest useful capsule, written against the core-module bytes ABI.
;;
;; Exports: memory, hm_alloc (a bump allocator: every call runs in a fresh
;; instance, so nothing is ever freed), and three entry points taking
;; (ptr, len) and returning (out_ptr << 32) | out_len.
(module
  (import "hypermesh" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "reverse called")

  (func $alloc (export "hm_alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    ;; grow by whole pages until the block fits; trap if the host refuses
    (block $fits
      (loop $grow
        (br_if $fits (i32.le_u (local.get $end) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1))) (i32.const -1))
          (then unreachable))
        (br $grow)))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))

  ;; echo: returns its input unchanged (the input buffer is the output)
  (func (export "echo") (param $ptr i32) (param $len i32) (result i64)
    (call $pack (local.get $ptr) (local.get $len)))

  ;; reverse: returns the input bytes in reverse order, and logs once
  (func (export "reverse") (param $ptr i32) (param $len i32) (result i64)
    (local $out i32) (local $i i32)
    (call $log (i32.const 16) (i32.const 14))
    (local.set $out (call $alloc (local.get $len)))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store8
          (i32.add (local.get $out) (local.get $i))
          (i32.load8_u (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.add (local.get $i) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy)))
    (call $pack (local.get $out) (local.get $len)))

  ;; health: answers "ok" whatever the input
  (data (i32.const 32) "ok")
  (func (export "health") (param $ptr i32) (param $len i32) (result i64)
    (call $pack (i32.const 32) (i32.const 2)))
)
