// cuda-emu's execution contexts (cuda_emu.h runs each CUDA thread as a fiber on one of them): a
// few lines of assembly on x86-64 (no signal-mask syscalls, and nothing that ASan's swapcontext
// interceptor warns about), ucontext elsewhere.
#pragma once

#include <cstdint>
#include <cstdlib>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu {

#if defined(__x86_64__)
extern "C" void emu_switch_context(void** save_sp, void* to_sp);
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save_sp, and resumes the context whose stack pointer is to_sp.
asm(R"(
  .pushsection .text.emu_switch_context,"axG",@progbits,emu_switch_context,comdat
  .weak emu_switch_context
  .type emu_switch_context, @function
emu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_context, .-emu_switch_context
  .popsection
)");
struct Context {
  void* sp = nullptr;
};
// A fresh context that starts entry() (which never returns) on [stack, stack + size).
inline void context_init(Context& c, char* stack, size_t size, void (*entry)()) {
  auto* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t{15});
  top -= 1;  // a null return address for entry: at its first instruction rsp = 8 mod 16, as after a call
  top[0] = 0;
  top -= 8;  // MXCSR and control word, r15, r14, r13, r12, rbx, rbp, then the address `ret` jumps to
  top[0] = 0x1f80u | (uint64_t{0x037f} << 32);
  for (int k = 1; k < 7; ++k) top[k] = 0;
  top[7] = reinterpret_cast<uint64_t>(entry);
  c.sp = top;
}
inline void context_switch(Context& from, Context& to) { emu_switch_context(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
inline void context_init(Context& c, char* stack, size_t size, void (*entry)()) {
  if (getcontext(&c.uc) != 0) std::abort();
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
inline void context_switch(Context& from, Context& to) {
  if (swapcontext(&from.uc, &to.uc) != 0) std::abort();
}
#endif

}  // namespace emu
