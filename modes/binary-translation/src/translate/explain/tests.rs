use super::*;
use vm_memory::GuestMemoryMmap;

const GUEST: u64 = 0x10_0000;

fn image(code: Vec<u8>) -> GuestImage {
    GuestImage::flat("t", code, GUEST, GUEST)
}

// 0x100000: mov ecx, 3
// 0x100005: cli
// 0x100006: sti
// 0x100007: loop 0x100005
// 0x100009: pushfq
// 0x10000a: popfq
// 0x10000b: call 0x100012
// 0x100010: out 0xe9, al
// 0x100012: ret
// (the call's return address 0x100010 continues with out and ret)
fn code() -> Vec<u8> {
    vec![
        0xB9, 3, 0, 0, 0,    // mov ecx, 3
        0xFA, // cli
        0xFB, // sti
        0xE2, 0xFC, // loop -4 → 0x100005
        0x9C, // pushfq
        0x9D, // popfq
        0xE8, 0x02, 0, 0, 0, // call +2 → 0x100012
        0xE6, 0xE9, // out 0xe9, al
        0xC3, // ret
    ]
}

#[test]
fn each_instruction_is_marked_with_what_became_of_it() {
    let e = explain(&image(code())).unwrap();
    let kinds: Vec<(u64, Kind)> = e
        .blocks
        .iter()
        .flat_map(|b| b.lines.iter().map(|l| (l.guest, l.kind)))
        .collect();
    // Block 1 from the entry: mov, cli, sti, loop (ends at the branch).
    assert_eq!(
        &kinds[..4],
        &[
            (GUEST, Kind::Copied),
            (GUEST + 5, Kind::Inline),
            (GUEST + 6, Kind::Inline),
            (GUEST + 7, Kind::Chain),
        ]
    );
    let first = &e.blocks[0];
    assert_eq!(first.lines[3].targets, vec![GUEST + 5, GUEST + 9]);
    assert_eq!(first.stubs.len(), 2);
    assert!(
        first.lines[1].translation[0].starts_with("mov qword ptr ["),
        "{first:?}"
    );
    // The loop head is a block of its own (a back edge into the first block).
    let starts: Vec<u64> = e.blocks.iter().map(|b| b.guest).collect();
    assert_eq!(
        starts,
        vec![GUEST, GUEST + 5, GUEST + 9, GUEST + 0x12, GUEST + 0x10]
    );
    let callout = e
        .blocks
        .iter()
        .flat_map(|b| &b.lines)
        .find(|l| l.kind == Kind::Callout)
        .unwrap();
    assert_eq!(callout.callout.as_deref(), Some("out"));
    assert_eq!(callout.translation, vec!["ud2".to_string()]);
    let ret = e
        .blocks
        .iter()
        .flat_map(|b| &b.lines)
        .find(|l| l.text == "ret")
        .unwrap();
    assert_eq!(ret.kind, Kind::Lookup);
    // The kinds agree with the translator's own counts.
    let s = e.stats();
    let k = e.kinds();
    assert_eq!(k.get(&Kind::Copied).copied().unwrap_or(0), s.copied);
    assert_eq!(k[&Kind::Inline], s.inline);
    assert_eq!(k[&Kind::Callout], s.callouts);
    assert_eq!(k[&Kind::Chain] + k[&Kind::Lookup], s.branches);
    let text = e.to_string();
    for fragment in [
        "block 1 — guest 0x100000..0x100009 (4 instructions)",
        "rewritten inline",
        "chaining stub → 0x100005, 0x100009",
        "callout: the VMM emulates `out`",
        "lookup: the target's translation from the table",
        "stub: patched into `jmp` to the translation of 0x100005 on first use",
    ] {
        assert!(text.contains(fragment), "{fragment:?} in\n{text}");
    }
    // The out's callout does not end its block: the ret is translated after its `ud2`.
    let out_block = e.blocks.iter().find(|b| b.guest == GUEST + 0x10).unwrap();
    assert_eq!(out_block.lines.len(), 2);
    assert_eq!(out_block.fall_through, None);
    // A block that runs off the end of what can be read falls through to a stub: its
    // last `jmp` is shown apart from the instruction before it.
    let e = explain(&image(vec![0x90])).unwrap();
    let b = &e.blocks[0];
    assert_eq!(b.lines[0].translation, vec!["nop".to_string()]);
    assert!(
        b.fall_through.as_deref().unwrap().starts_with("jmp "),
        "{b:?}"
    );
    assert_eq!(e.outside, vec![GUEST + 1]);
}

fn cache_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(
        GuestAddress(layout::DATA),
        (layout::TC_END - layout::DATA) as usize,
    )])
    .unwrap()
}

#[test]
fn trace_notes_say_what_the_vmm_did() {
    let img = image(code());
    let mem = cache_memory();
    let mut cache = Cache::new(&mem, layout::TC_END).unwrap();
    let mut read = image_reader(&img);
    let first = cache.get(&mem, GUEST, &mut read).unwrap();
    // The loop's back edge: a chaining stub reached for the first time.
    let (_, b) = cache.guest_of(first).unwrap();
    let stub = b
        .sites
        .iter()
        .find_map(|(tc, s)| {
            matches!(s, Site::Branch { target } if *target == GUEST + 5).then_some(*tc)
        })
        .unwrap();
    let entry = cache.entry(stub);
    let to = cache.get(&mem, GUEST + 5, &mut read).unwrap();
    let n = note(
        &cache,
        &mem,
        &mut read,
        stub,
        entry,
        "translate",
        false,
        Some(to),
    );
    assert_eq!(n.event, "translate");
    assert_eq!(n.rip, Some(GUEST + 5));
    assert!(
        n.action.starts_with(&format!(
            "stub patched into `jmp {to:#x}`: translation of 0x100005 at {to:#x} ("
        )),
        "{n:?}"
    );
    // A callout: the guest's `out`, the block going on after the `ud2`.
    let out_tc = cache.get(&mem, GUEST + 0x10, &mut read).unwrap();
    let (site_tc, site) = cache
        .guest_of(out_tc)
        .unwrap()
        .1
        .sites
        .iter()
        .find(|(_, s)| matches!(s, Site::Callout { .. }))
        .copied()
        .unwrap();
    mem.write_obj::<u64>(0x200, GuestAddress(layout::VIF))
        .unwrap();
    let n = note(
        &cache,
        &mem,
        &mut read,
        site_tc,
        Some(Entry::Site(site)),
        "out",
        false,
        Some(site_tc + 2),
    );
    assert_eq!(n.rip, Some(GUEST + 0x10));
    assert_eq!(n.instruction.as_deref(), Some("out 0E9h,al"));
    assert_eq!(
        n.action,
        format!(
            "callout at {site_tc:#x} emulated, vIF 1 → 0, resume after the `ud2` at {:#x}",
            site_tc + 2
        )
    );
    // A lookup miss: the target the lookup routine left in the data page.
    mem.write_obj::<u64>(GUEST + 0x10, GuestAddress(layout::TARGET))
        .unwrap();
    let n = note(
        &cache,
        &mem,
        &mut read,
        0,
        Some(Entry::LookupMiss),
        "translate",
        true,
        Some(out_tc),
    );
    assert_eq!(n.rip, Some(GUEST + 0x10));
    assert_eq!(n.instruction.as_deref(), Some("lookup miss"));
    assert!(
        n.action
            .starts_with("table entry set: translation of 0x100010"),
        "{n:?}"
    );
}
