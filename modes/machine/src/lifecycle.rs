//! The run lifecycle, once for every engine: machine, image, handler, run, record.

use contract::image::GuestImage;
use contract::record::{Mode, RunRecord};
use contract::{Error, Result, RunOptions};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use crate::config::{Boot, MachineConfig, Msr};
use crate::exit_loop::ExitHandler;
use crate::{kvm, Machine};

/// An engine's exit policy for one run: the [`ExitHandler`], plus what only it knows
/// about the run when it ends (the console it kept, injections, the guest's view of its
/// registers, notes).
pub trait Policy: ExitHandler + Sized {
    /// Adds what the handler knows to the machine's record of the run.
    fn finish(self, record: &mut RunRecord, mem: &GuestMemoryMmap);

    /// The handler's standard devices, where the machine attaches the disk; `None`: this
    /// engine cannot take one.
    fn devices(&mut self) -> Option<&mut crate::Devices> {
        None
    }
}

/// The run lifecycle, once for every engine: build the machine from `cfg`, load the
/// image, build the handler from what booted, run to the end, record, and let the handler
/// add what it knows. The record is not judged: the harness does that.
pub fn launch<P: Policy>(
    mode: Mode,
    image: &GuestImage,
    opts: &RunOptions,
    cfg: &MachineConfig,
    make: impl FnOnce(&Boot<'_>) -> Result<P>,
) -> Result<RunRecord> {
    // A run whose virtio completion is an interrupt needs the in-kernel irqchip before
    // its vCPU exists, and its driver is told the vector in the boot-info page.
    let completion = opts
        .disk
        .as_ref()
        .map(|d| crate::disk::completion(cfg.privilege, d.backend));
    let irq_cfg;
    let cfg = if completion == Some(crate::disk::Completion::Interrupt) {
        let mut c = cfg.clone();
        c.irqchip = true;
        c.boot_info.blk_completion_vector = u64::from(contract::abi::blk::COMPLETION_VECTOR);
        irq_cfg = c;
        &irq_cfg
    } else {
        cfg
    };
    let mut machine = Machine::new(cfg).map_err(|e| match e {
        Error::MsrRefused { index, what } => Error::Unsupported {
            mode,
            why: format!("KVM refused MSR {index:#x} ({what})"),
        },
        e => e,
    })?;
    machine.load(image)?;
    let sregs = machine.vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let boot = Boot {
        mem: &machine.mem,
        ram_size: machine.ram_size,
        cpuid: machine.cpuid()?,
        sregs,
        host: &machine.host,
    };
    let mut handler = make(&boot)?;
    if let (Some(disk), Some(c)) = (&opts.disk, &completion) {
        crate::disk::attach(mode, disk, c, &machine._vm, &machine.mem, &mut handler)?;
    }
    let _span = tracing::debug_span!("run", %mode, workload = %image.name).entered();
    let gate = opts.gate.as_ref().map(|g| &*g.0);
    let summary = machine.run_gated(&mut handler, &opts.limits, gate)?;
    let mut record = machine.record(mode, image, opts, summary);
    if let (Some(disk), Some(c)) = (&opts.disk, &completion) {
        crate::disk::report(disk, c, &mut handler, &mut record);
    }
    handler.finish(&mut record, &machine.mem);
    Ok(record)
}

/// Sets the MSRs an engine asked for; KVM must accept every one.
pub(crate) fn set_msrs(vcpu: &VcpuFd, msrs: &[Msr]) -> Result<()> {
    for m in msrs {
        let list = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
            index: m.index,
            data: m.value,
            ..Default::default()
        }])
        .map_err(|e| Error::InvalidOption(format!("MSR list: {e:?}")))?;
        if vcpu.set_msrs(&list).map_err(kvm("KVM_SET_MSRS"))? != 1 {
            return Err(Error::MsrRefused {
                index: m.index,
                what: m.what,
            });
        }
    }
    Ok(())
}
