//! Fuzz target: the shell-word lexer must never panic, whatever the word.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage_shell::{Lexer, build_env};

fuzz_target!(|data: &[u8]| {
    let Ok(word) = std::str::from_utf8(data) else {
        return;
    };
    let env = build_env([
        "PWD=/home",
        "EMPTY=",
        "SPACED=a  b ",
        "GLOB=*x?",
        "DOLLAR=$0$$",
        "KOREAN=한국어",
    ]);
    for escape in ['\\', '`'] {
        for lexer in [Lexer::new(escape), Lexer::with_options(escape, true, true)] {
            let single = lexer.expand_word(word, &env);
            let _ = lexer.expand_words(word, &env);
            let with_matches = lexer.expand_word_with_matches(word, &env);
            assert_eq!(single.is_ok(), with_matches.is_ok());
            if let Err(error) = single {
                assert!(word.is_char_boundary(error.offset));
                let _ = error.char_offset();
            }
        }
    }
});
