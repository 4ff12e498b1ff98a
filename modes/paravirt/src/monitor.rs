//! The monitor's part in a paravirtual run: the CPL 0 routine (the toolkit's
//! [`::monitor::routine`]) applies the validated `mmu_update` writes inside the guest and
//! reloads CR3, then `iretq`s back to the guest at CPL 3. Here the vCPU enters it from a
//! hypercall exit: the VMM builds the frame that returns to the guest and switches the
//! vCPU to CPL 0.

use ::monitor::frame::Frame;
use ::monitor::routine::{self, Request, Resume};
use contract::abi::selector;
use kvm_bindings::{kvm_regs, kvm_sregs};
use machine::setup::{long_mode_sregs, GuestPrivilege};
use vm_memory::GuestMemoryMmap;

/// Points the vCPU at the routine: hands it `writes` (then a CR3 reload if `flush`), with
/// a frame that returns to the guest context in `regs`, and switches `regs`/`sregs` to
/// CPL 0.
pub fn enter(
    mem: &GuestMemoryMmap,
    regs: &mut kvm_regs,
    sregs: &mut kvm_sregs,
    writes: &[(u64, u64)],
    flush: bool,
) -> Result<(), String> {
    let request = Request {
        stores: writes.to_vec(),
        invlpg: Vec::new(),
        reload_cr3: flush,
        load_cr3: None,
    };
    let guest = Frame {
        rip: regs.rip,
        cs: u64::from(selector::USER_CODE),
        rflags: regs.rflags,
        rsp: regs.rsp,
        ss: u64::from(selector::USER_DATA),
    };
    let entry = routine::prepare(mem, &request, Resume::Guest(guest))?;
    regs.rip = entry.rip;
    regs.rsp = entry.rsp;
    if let Some(rflags) = entry.rflags {
        regs.rflags = rflags;
    }
    if entry.switch_to_cpl0 {
        let mut kernel = *sregs;
        long_mode_sregs(&mut kernel, GuestPrivilege::Kernel, false);
        sregs.cs = kernel.cs;
        sregs.ss = kernel.ss;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::abi::layout;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn enter_switches_to_the_routine_at_cpl_0_and_keeps_the_way_back() {
        let mem = machine::guest_memory(4 << 20).unwrap();
        let mut regs = kvm_regs {
            rip: 0x10_0002,
            rsp: 0xF_FF00,
            rflags: 0x302, // TF set
            rax: 5,
            ..Default::default()
        };
        let mut sregs = kvm_sregs::default();
        long_mode_sregs(&mut sregs, GuestPrivilege::User, false);
        let user_ds = sregs.ds;
        let writes = [(layout::SCRATCH_PT, 0x5007)];
        enter(&mem, &mut regs, &mut sregs, &writes, true).unwrap();
        assert_eq!(regs.rip, routine::Path::StoreReloadCr3.addr());
        assert_eq!(regs.rsp, routine::GUEST_FRAME);
        assert_eq!(regs.rflags, 0x202);
        assert_eq!(regs.rax, 5);
        assert_eq!(
            (sregs.cs.selector, sregs.cs.dpl),
            (selector::KERNEL_CODE, 0)
        );
        assert_eq!(
            (sregs.ss.selector, sregs.ss.dpl),
            (selector::KERNEL_DATA, 0)
        );
        assert_eq!(sregs.ds, user_ds, "only CS and SS change");
        let word = |at: u64| mem.read_obj::<u64>(GuestAddress(at)).unwrap();
        let frame: Vec<u64> = (2..7).map(|i| word(regs.rsp + i * 8)).collect();
        assert_eq!(frame, [0x10_0002, 0x23, 0x302, 0xF_FF00, 0x1B]);
        let mailbox = routine::MAILBOX;
        assert_eq!(word(mailbox + routine::STORES), 1);
        assert_eq!(word(mailbox + routine::RELOAD_CR3), 1);
        assert_eq!(word(mailbox + routine::ENTRIES + 8), 0x5007);
    }

    #[test]
    fn more_writes_than_a_batch_are_refused() {
        let mem = machine::guest_memory(4 << 20).unwrap();
        let mut regs = kvm_regs::default();
        let mut sregs = kvm_sregs::default();
        let writes = vec![(layout::SCRATCH_PT, 0); routine::MAX_STORES + 1];
        assert!(enter(&mem, &mut regs, &mut sregs, &writes, false).is_err());
        assert_eq!(regs.rip, 0, "nothing changed");
    }
}
