//! Chapter 2: a character tokenizer. The vocabulary is the sorted set of
//! distinct characters in the training text; a character's id is its place
//! in that list. Encoding maps text to ids, decoding maps ids back.
//!
//! Run: `cargo run --release --example 02_tokenizer`.

#[path = "common/mod.rs"]
mod common;

use lmforge::tokenizer::{CharTokenizer, Tokenizer};

/// What the chapter found.
pub struct Outcome {
    pub vocab_size: usize,
    pub round_trip: bool,
    pub unknown_rejected: bool,
}

pub fn run(tiny: bool) -> Outcome {
    let corpus = lmforge::data::text::demo_corpus();
    let text = if tiny {
        &corpus[..2000]
    } else {
        corpus.as_str()
    };
    println!(
        "training text: {} characters, starting {:?}",
        text.chars().count(),
        &text[..40]
    );

    let tokenizer = CharTokenizer::from_text(text).expect("the text is not empty");
    let chars: String = tokenizer.chars().iter().collect();
    println!(
        "vocabulary: {} characters: {chars:?}",
        tokenizer.vocab_size()
    );

    let message = "First Citizen:";
    let ids = tokenizer
        .encode(message)
        .expect("every character is in the vocabulary");
    println!(
        "encode({message:?}) = {ids:?}  (shape ({}) : one id per character)",
        ids.len()
    );
    let decoded = String::from_utf8(tokenizer.decode_bytes(&ids)).expect("UTF-8");
    println!("decode(...) = {decoded:?}");

    // A character the text never contained has no id: an error, not a guess.
    let unknown = tokenizer.encode("€");
    println!("encode(\"€\") = {unknown:?}");
    Outcome {
        vocab_size: tokenizer.vocab_size(),
        round_trip: decoded == message,
        unknown_rejected: unknown.is_err(),
    }
}

fn main() -> std::process::ExitCode {
    common::main_with(|args| {
        run(args.tiny);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn encode_then_decode_is_the_identity() {
        let o = super::run(true);
        assert!(o.round_trip && o.unknown_rejected);
        assert!(o.vocab_size > 20 && o.vocab_size < 70, "{}", o.vocab_size);
        assert_eq!(
            super::run(false).vocab_size,
            65,
            "Tiny Shakespeare has 65 characters"
        );
    }
}
