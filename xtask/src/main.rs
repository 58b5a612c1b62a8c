fn main() -> nice_plug_xtask::Result<()> {
    // nice-plug-xtask wants `bundle -p a -p b`; also accept the documented
    // `bundle a b c [--release]` by turning bare package names into `-p NAME`.
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|c| c == "bundle") {
        let rest: Vec<String> = args.drain(1..).collect();
        let bare = rest.iter().take_while(|a| !a.starts_with('-')).count();
        if bare > 1 {
            for name in &rest[..bare] {
                args.push("-p".to_owned());
                args.push(name.clone());
            }
            args.extend(rest[bare..].iter().cloned());
        } else {
            args.extend(rest);
        }
    }
    nice_plug_xtask::main_with_args("cargo xtask", args)
}
