/* virtlab.h: the guest side of virtlab's ABIs, for freestanding C guests.
 *
 * One header for both flavours of a guest kernel:
 *   - native (the default): the guest executes the real instructions (`out`, `hlt`) and
 *     runs in hw-assisted and trap-emulate;
 *   - paravirtual (compile with -DVIRTLAB_PARAVIRT): the guest calls the hypervisor
 *     instead (docs/hypercall-abi.md) and runs in paravirt.
 * Write the guest against the vl_* functions below and build it twice; the difference
 * between the two builds is exactly what "modifying the guest kernel" means.
 *
 * The guest ABI (entry state, memory map, boot-info page, devices) is docs/guest-abi.md.
 */
#ifndef VIRTLAB_H
#define VIRTLAB_H

typedef unsigned char vl_u8;
typedef unsigned short vl_u16;
typedef unsigned int vl_u32;
typedef unsigned long vl_u64;

/* ---------------------------------------------------------------- devices */

#define VL_PORT_CONSOLE 0xE9   /* one byte out = one character */
#define VL_PORT_EXIT 0xF4      /* 32-bit out = exit code; RBX = result */
#define VL_PORT_TIMER 0xF0     /* 32-bit out arms the one-shot timer (microseconds) */
#define VL_PORT_HYPERCALL 0xFC /* paravirtual guests: the hypercall gate */

/* The boot-info page; RDI points at it on entry (the first argument of _start). */
struct vl_boot_info {
    vl_u64 magic;           /* "VIRTLAB\0" */
    vl_u64 abi_version;     /* 2 */
    vl_u64 ram_size;        /* guest RAM, from address 0 */
    vl_u64 flavour;         /* 0 native, 1 paravirtual */
    vl_u64 shared_info;     /* paravirtual: the shared-info page */
    vl_u64 hypercall_port;  /* paravirtual: 0xFC */
    vl_u64 mmio_base;       /* the MMIO device page */
    vl_u64 scratch_va;      /* a page whose PTE the guest may rewrite */
    vl_u64 scratch_pte;     /* guest-physical address of that PTE */
    vl_u64 scratch_frame_a; /* the two frames it may point to */
    vl_u64 scratch_frame_b;
    vl_u64 timer_vector;    /* vector the timer raises */
    vl_u64 tsc_khz;         /* TSC frequency, 0 if unknown */
    vl_u64 monitor_base;    /* the monitor's region (not RAM) */
    vl_u64 monitor_size;
    vl_u64 blk_completion_vector; /* virtio-blk completion interrupt's vector, 0: poll */
};

/* ---------------------------------------------------------------- hypercalls */

/* Numbers (RAX); arguments in RDI, RSI, RDX; the result comes back in RAX. */
enum vl_hypercall {
    VL_HC_CONSOLE_WRITE = 1, /* (buf, len): len <= 4096; returns len */
    VL_HC_EXIT = 2,          /* (code): ends the run; the result is RBX */
    VL_HC_BLOCK = 3,         /* (): wait for an event; nothing armed: the run ends halted */
    VL_HC_SET_TIMER = 4,     /* (micros) */
    VL_HC_MMU_UPDATE = 5,    /* (reqs, count, flags) */
    VL_HC_NEW_BASEPTR = 6,   /* (pml4) */
    VL_HC_CPUID = 7,         /* (leaf, subleaf, out[4]) */
    VL_HC_MULTICALL = 8,     /* (calls, count) */
    VL_HC_SET_TRAP_TABLE = 9,
    VL_HC_IRET = 10,
    VL_HC_EVENT_CHECK = 11,
    VL_HC_SET_TPR = 12,      /* (value 0..15) */
    VL_HC_DEVICE_READ = 13,  /* (addr, count, buf) */
    VL_HC_MMUEXT_OP = 14,    /* (op: 1 pin, 2 unpin; frame; level 1..4) */
};

/* Error codes (negative results). */
#define VL_EPERM (-1)
#define VL_E2BIG (-7)
#define VL_EFAULT (-14)
#define VL_EINVAL (-22)
#define VL_ENOSYS (-38)

#define VL_MAX_CONSOLE_WRITE 4096

/* One hypercall: `out 0xFC, eax` with the number in RAX. The VMM exits straight to user
 * space (the TSS I/O bitmap opens the port to CPL 3) and writes the result into RAX. */
static inline long vl_hypercall(vl_u64 nr, vl_u64 a0, vl_u64 a1, vl_u64 a2)
{
    long ret;
    __asm__ volatile("outl %%eax, %w1"
                     : "=a"(ret)
                     : "Nd"((vl_u16)VL_PORT_HYPERCALL), "a"(nr), "D"(a0), "S"(a1), "d"(a2)
                     : "memory");
    return ret;
}

static inline long vl_hc_console_write(const char *buf, vl_u64 len)
{
    return vl_hypercall(VL_HC_CONSOLE_WRITE, (vl_u64)buf, len, 0);
}

static inline long vl_hc_block(void) { return vl_hypercall(VL_HC_BLOCK, 0, 0, 0); }

static inline long vl_hc_set_timer(vl_u64 micros)
{
    return vl_hypercall(VL_HC_SET_TIMER, micros, 0, 0);
}

static inline long vl_hc_cpuid(vl_u32 leaf, vl_u32 subleaf, vl_u32 out[4])
{
    return vl_hypercall(VL_HC_CPUID, leaf, subleaf, (vl_u64)out);
}

static inline long vl_hc_set_tpr(vl_u64 value) { return vl_hypercall(VL_HC_SET_TPR, value, 0, 0); }

static inline __attribute__((noreturn)) void vl_hc_exit(vl_u32 code, vl_u64 result)
{
    __asm__ volatile("outl %%eax, %w0"
                     :
                     : "Nd"((vl_u16)VL_PORT_HYPERCALL), "a"((vl_u64)VL_HC_EXIT), "D"((vl_u64)code),
                       "b"(result)
                     : "memory");
    __builtin_unreachable();
}

/* ---------------------------------------------------------------- native instructions */

static inline void vl_outb(vl_u16 port, vl_u8 value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline void vl_outl(vl_u16 port, vl_u32 value)
{
    __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}

/* ---------------------------------------------------------------- the pv-ops */

/* What a guest kernel calls; each build picks its implementation. */
#ifdef VIRTLAB_PARAVIRT

/* Paravirtual: one hypercall per 4 KiB of text (batched), not one exit per byte. */
static inline void vl_console_write(const char *s, vl_u64 n)
{
    while (n > 0) {
        vl_u64 chunk = n < VL_MAX_CONSOLE_WRITE ? n : VL_MAX_CONSOLE_WRITE;
        vl_hc_console_write(s, chunk);
        s += chunk;
        n -= chunk;
    }
}

static inline __attribute__((noreturn)) void vl_exit(vl_u32 code, vl_u64 result)
{
    vl_hc_exit(code, result);
}

/* With no event pending and no timer armed, `block` ends the run as halted. */
static inline __attribute__((noreturn)) void vl_halt(void)
{
    for (;;)
        vl_hc_block();
}

#else

/* Native: one `out` per byte, each a privileged instruction. */
static inline void vl_console_write(const char *s, vl_u64 n)
{
    for (vl_u64 i = 0; i < n; i++)
        vl_outb(VL_PORT_CONSOLE, (vl_u8)s[i]);
}

static inline __attribute__((noreturn)) void vl_exit(vl_u32 code, vl_u64 result)
{
    __asm__ volatile("outl %0, %1" : : "a"(code), "Nd"((vl_u16)VL_PORT_EXIT), "b"(result));
    __builtin_unreachable();
}

/* `hlt` with interrupts off and no timer armed: the run ends as halted. */
static inline __attribute__((noreturn)) void vl_halt(void)
{
    for (;;)
        __asm__ volatile("hlt");
}

#endif

#endif /* VIRTLAB_H */
