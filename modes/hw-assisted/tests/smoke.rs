use hw_assisted::HwAssisted;
use modes::{Engine, GuestImage, RunOptions};

#[test]
fn smoke() {
    let code = vec![0xB0, b'A', 0xE6, 0xE9, 0xBB, 5, 0, 0, 0, 0xB8, 3, 0, 0, 0, 0xE7, 0xF4];
    let image = GuestImage::flat("hello", code, 0x10_0000, 0x10_0000);
    let r = HwAssisted.run(&image, &RunOptions::default()).unwrap();
    println!("{r:#?}");
    assert_eq!(r.console, "A");
}
