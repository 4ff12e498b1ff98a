/* A freestanding guest: writes "Hello" to the debug console (port 0xE9) and halts.
 *
 * Build a flat binary loaded at 0x100000 (see flat.ld):
 *   gcc -ffreestanding -fno-pic -nostdlib -static -mno-red-zone -O2 \
 *       -Wl,--build-id=none -T flat.ld -o hello.elf hello.c
 *   objcopy -O binary hello.elf hello.bin
 * Run it in every mode:
 *   virtlab run --guest-bin hello.bin --load 0x100000
 */

static inline void outb(unsigned short port, unsigned char value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

__attribute__((section(".text.start"), noreturn)) void _start(void)
{
    static const char message[] = "Hello\n";
    for (const char *p = message; *p; p++)
        outb(0xE9, (unsigned char)*p);
    for (;;)
        __asm__ volatile("hlt");
}
