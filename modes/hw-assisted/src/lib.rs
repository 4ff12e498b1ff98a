//! The hardware-assisted engine: the guest kernel runs at CPL 0 inside the VM, exactly as
//! it would on bare metal. The CPU (through KVM) executes its sensitive instructions
//! itself; only port I/O, MMIO and `hlt` — and whatever KVM does not handle in the kernel —
//! come out to this VMM.
//!
//! ```
//! use hw_assisted::HwAssisted;
//! use contract::{Engine, GuestImage, RunOptions};
//!
//! // mov al,'A'; out 0xe9,al; mov eax,0; out 0xf4,eax
//! let code = vec![0xB0, b'A', 0xE6, 0xE9, 0xB8, 0, 0, 0, 0, 0xE7, 0xF4];
//! let image = GuestImage::flat("hello", code, 0x10_0000, 0x10_0000);
//! let record = HwAssisted.run(&image, &RunOptions::default())?;
//! assert_eq!(record.console, "A");
//! assert_eq!(record.port_writes(0xE9), 1);
//! # Ok::<(), contract::Error>(())
//! ```

use contract::abi::port;
use contract::{Engine, GuestImage, Mode, RunOptions, RunRecord, TraceNote};
use machine::devices::le_value;
use machine::{
    no_such_port, unhandled_exception, Action, Devices, ExitHandler, GuestPrivilege, Handled,
    MachineConfig, Policy, Vcpu,
};

/// The hardware-assisted engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct HwAssisted;

/// Exit policy of the hardware-assisted engine: the standard devices, and any exception
/// the guest did not handle itself ends the run.
#[derive(Debug)]
pub struct Handler {
    /// The devices, with what the guest did to them.
    pub devices: Devices,
    tracing: bool,
}

impl Handler {
    /// A handler with fresh devices for a run under `limits`.
    pub fn new(limits: &contract::Limits) -> Self {
        Handler {
            devices: Devices::new(limits),
            tracing: limits.trace_events > 0,
        }
    }
}

/// What an exit did, as a trace note (built only when the run is traced).
fn note(tracing: bool, describe: impl FnOnce() -> (String, String)) -> Option<TraceNote> {
    tracing.then(|| {
        let (event, action) = describe();
        TraceNote {
            event,
            action,
            ..TraceNote::default()
        }
    })
}

/// A byte as a printable character or an escape.
fn show_byte(b: u8) -> String {
    match b {
        b' '..=b'~' => format!("'{}'", char::from(b)),
        b'\n' => "'\\n'".into(),
        _ => format!("{b:#04x}"),
    }
}

impl ExitHandler for Handler {
    fn before_entry(&mut self, vcpu: &mut Vcpu<'_>) -> Action {
        self.devices.deliver_timer(vcpu)
    }

    fn io_out(&mut self, vcpu: &mut Vcpu<'_>, p: u16, data: &[u8]) -> Handled {
        if p == port::FAULT {
            return unhandled_exception(vcpu).into();
        }
        let note = note(vcpu.tracing(), || {
            let action = match p {
                port::CONSOLE => {
                    let shown: Vec<String> = data.iter().map(|b| show_byte(*b)).collect();
                    format!("console ← {}", shown.join(" "))
                }
                port::EXIT => format!("exit code {}", le_value(data)),
                port::TIMER => format!("timer armed for {} µs", le_value(data)),
                _ => format!("{} byte(s)", data.len()),
            };
            (format!("out {p:#x}"), action)
        });
        Handled::from(
            self.devices
                .io_out(vcpu, p, data)
                .unwrap_or_else(|| no_such_port(p, true)),
        )
        .noted(note)
    }

    fn io_in(&mut self, p: u16, data: &mut [u8]) -> Handled {
        let action = self
            .devices
            .io_in(p, data)
            .unwrap_or_else(|| no_such_port(p, false));
        Handled::from(action).noted(note(self.tracing, || {
            (format!("in {p:#x}"), format!("→ {}", le_value(data)))
        }))
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Handled {
        let action = self.devices.mmio_read(addr, data);
        Handled::from(action).noted(note(self.tracing, || {
            (
                format!("mmio read {addr:#x}"),
                format!("→ {}", le_value(data)),
            )
        }))
    }

    fn mmio_write(&mut self, vcpu: &mut Vcpu<'_>, addr: u64, data: &[u8]) -> Handled {
        let note = note(vcpu.tracing(), || {
            (
                format!("mmio write {addr:#x}"),
                format!("← {}", le_value(data)),
            )
        });
        Handled::from(self.devices.mmio_write(addr, data)).noted(note)
    }

    fn halt(&mut self, vcpu: &mut Vcpu<'_>) -> Handled {
        let armed = self.devices.timer.armed() && vcpu.interrupts_enabled();
        let note = note(vcpu.tracing(), || {
            let action = if armed {
                "wait for the timer, then inject vector 0x20"
            } else {
                "nothing can wake the guest (no timer, or interrupts off): the run ends"
            };
            ("hlt".into(), action.into())
        });
        Handled::from(self.devices.halt(vcpu)).noted(note)
    }
}

impl Policy for Handler {
    fn devices(&mut self) -> Option<&mut machine::Devices> {
        Some(&mut self.devices)
    }

    fn finish(self, record: &mut RunRecord, _mem: &machine::GuestMemory) {
        record.console = self.devices.console.text();
        record.injections = self.devices.injections;
    }
}

impl Engine for HwAssisted {
    fn mode(&self) -> Mode {
        Mode::HwAssisted
    }

    fn run(&self, image: &GuestImage, opts: &RunOptions) -> contract::Result<RunRecord> {
        let cfg = MachineConfig::for_image(image, opts, GuestPrivilege::Kernel);
        machine::launch(Mode::HwAssisted, image, opts, &cfg, |_| {
            Ok(Handler::new(&opts.limits))
        })
    }
}
