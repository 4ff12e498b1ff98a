/* A freestanding guest: writes "Hello" to the debug console and halts, in both flavours.
 *
 * Native build (runs in hw-assisted and trap-emulate: one `out` per character):
 *   gcc -ffreestanding -fno-pic -nostdlib -static -mno-red-zone -O2 \
 *       -Wl,--build-id=none -T flat.ld -o hello.elf hello.c
 *   objcopy -O binary hello.elf hello.bin
 *   virtlab run --guest-bin hello.bin --load 0x100000
 * Paravirtual build (runs in paravirt: one console_write hypercall for the whole line):
 *   gcc -DVIRTLAB_PARAVIRT -ffreestanding -fno-pic -nostdlib -static -mno-red-zone -O2 \
 *       -Wl,--build-id=none -T flat.ld -o hello-pv.elf hello.c
 *   objcopy -O binary hello-pv.elf hello-pv.bin
 *   virtlab run --guest-bin hello-pv.bin --load 0x100000 --mode paravirt
 */

#include "virtlab.h"

__attribute__((section(".text.start"), noreturn)) void _start(void)
{
    static const char message[] = "Hello\n";
    vl_console_write(message, sizeof message - 1);
    vl_halt();
}
