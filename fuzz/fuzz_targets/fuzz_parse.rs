//! Fuzz target: the Dockerfile front end must never panic on any text:
//! parsing, the dump, lowering to typed instructions, and expansion with
//! ARG/ENV scoping (which drives the shell-word expander per instruction).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(dockerfile) = stowage_dockerfile::parse(&text) else {
        return;
    };
    let _ = dockerfile.dump();
    let Ok(program) = stowage_dockerfile::lower(&dockerfile) else {
        return;
    };
    let mut options = stowage_dockerfile::ExpandOptions::default();
    options.build_args.insert("VERSION".to_owned(), "1.0".to_owned());
    let _ = stowage_dockerfile::expand(&program, &options);
});
