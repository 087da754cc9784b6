//! The document reader that every command reads text through: long documents
//! are cut into bounded pieces in linear time, hard cuts keep UTF-8
//! characters and CRLF whole, cuts at newlines keep GPT-2's ids, JSON Lines
//! records are bounded, and `train --data`, `prepare` and `tokenizer train`
//! see the same normalised text.

use lmforge::data::documents::{
    self, InputFile, MAX_RECORD_BYTES, OnBad, PIECE_BYTES, Piece, ReadOptions,
};
use lmforge::data::prepare::{PrepareOptions, prepare};
use lmforge::data::shards::ShardSet;
use lmforge::data::{TokenSource, text};
use lmforge::tokenizer::{self, Pattern, Tokenizer, TokenizerSpec, train};
use std::path::Path;
use std::time::Instant;

fn inputs(path: &Path) -> Vec<InputFile> {
    documents::expand_inputs(&[path], None).unwrap()
}

fn pieces_of(path: &Path, opts: &ReadOptions) -> Vec<Piece> {
    let mut pieces = Vec::new();
    documents::read_all(&inputs(path), opts, &mut |p| {
        pieces.push(p);
        Ok(())
    })
    .unwrap();
    pieces
}

#[test]
fn a_long_line_is_cut_into_bounded_pieces_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-line.txt");
    let text = "word ".repeat((16 << 20) / 5); // 16 MiB without a newline
    std::fs::write(&path, &text).unwrap();
    let start = Instant::now();
    let pieces = pieces_of(&path, &ReadOptions::default());
    let seconds = start.elapsed().as_secs_f64();
    assert!(seconds < 1.0, "{seconds:.2} s for {} MiB", text.len() >> 20);
    assert!(pieces.len() >= text.len() / PIECE_BYTES);
    assert!(pieces.iter().all(|p| p.text.len() <= PIECE_BYTES));
    assert!(pieces[0].first && pieces[1..].iter().all(|p| !p.first));
    let joined: String = pieces.iter().map(|p| p.text.as_str()).collect();
    assert!(joined == text, "the pieces join back to the text");
}

#[test]
fn a_hard_cut_never_splits_a_character_or_a_crlf() {
    let dir = tempfile::tempdir().unwrap();
    for (k, ch) in ["é", "€", "🎉", "\r\n"].into_iter().enumerate() {
        for before in 1..ch.len() {
            // `ch` starts `before` bytes before the piece limit: it straddles it.
            let text = format!("{}{ch}tail", "a".repeat(PIECE_BYTES - before));
            let path = dir.path().join(format!("{k}-{before}.txt"));
            std::fs::write(&path, &text).unwrap();
            let pieces = pieces_of(&path, &ReadOptions::default());
            let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
            let want = text.replace("\r\n", "\n");
            assert_eq!(texts.concat(), want, "{ch:?} at -{before}");
            assert_eq!(texts.len(), 2, "{ch:?} at -{before}");
            assert_eq!(texts[0].len(), PIECE_BYTES - before, "{ch:?} at -{before}");
        }
    }
}

/// Pieces cut at a newline between non-white-space characters encode to the
/// ids of the whole text.
#[test]
fn pieces_cut_at_newlines_encode_like_the_whole_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lines.txt");
    let lines = [
        "First Citizen:\n",
        "\n",
        "  indented line\n",
        "trailing space \n",
        "tab\tand\u{a0}nbsp\n",
        "\n\n",
        "Ünïcødé 🎉 line\n",
    ];
    let text: String = (0..200_000).map(|i| lines[i % lines.len()]).collect();
    std::fs::write(&path, &text).unwrap();
    let pieces = pieces_of(&path, &ReadOptions::default());
    assert!(pieces.len() >= 2, "{} pieces", pieces.len());
    let gpt2 = tokenizer::gpt2().unwrap();
    let mut ids = Vec::new();
    for p in &pieces {
        ids.extend(gpt2.encode(&p.text).unwrap());
    }
    assert!(
        ids == gpt2.encode(&text).unwrap(),
        "same ids as the whole text"
    );
}

#[test]
fn an_over_long_json_lines_record_is_an_error_with_its_line_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jsonl");
    let mut data = b"{\"text\": \"short\"}\n{\"text\": \"".to_vec();
    data.resize(data.len() + MAX_RECORD_BYTES, b'x');
    data.extend_from_slice(b"\"}\n{\"text\": \"after\"}\n");
    std::fs::write(&path, &data).unwrap();
    let mut seen = Vec::new();
    let err = documents::read_all(&inputs(&path), &ReadOptions::default(), &mut |p| {
        seen.push(p.text);
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("big.jsonl") && err.contains("line 2") && err.contains("64 MiB"),
        "{err}"
    );
    assert_eq!(seen, ["short"]);

    let opts = ReadOptions {
        on_bad_archive: OnBad::Skip,
        ..ReadOptions::default()
    };
    let mut seen = Vec::new();
    let stats = documents::read_all(&inputs(&path), &opts, &mut |p| {
        seen.push(p.text);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, ["short", "after"]);
    assert_eq!(stats.documents, 2);
    assert_eq!(stats.bad_archives.len(), 1);
    assert!(
        stats.bad_archives[0].contains("line 2"),
        "{:?}",
        stats.bad_archives
    );
}

/// `train --data`, `prepare` and `tokenizer train` read the same documents,
/// normalised the same way.
#[test]
fn every_command_sees_the_same_normalised_text() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), "\u{feff}First line\r\nsecond line\r\n").unwrap();
    std::fs::write(
        dir.join("sub/b.jsonl"),
        "{\"text\": \"\\ufeffa record\\r\\nwith CRLF\\r\\n\"}\n{\"text\": \"another\\n\"}\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.md"), "markdown is read too\n").unwrap();
    // Every document ends with a newline, so joining them adds none, and
    // every boundary is a place the pre-tokenizer cuts anyway.
    let want = "First line\nsecond line\nmarkdown is read too\na record\nwith CRLF\nanother\n";
    assert_eq!(text::read_corpus(&dir).unwrap(), want);

    let mut o = PrepareOptions::new(
        vec![dir.display().to_string()],
        TokenizerSpec::Char,
        &tmp.path().join("shards"),
    );
    o.val_fraction = 0.0;
    prepare(&o).unwrap();
    let set = ShardSet::open(&o.out).unwrap();
    let tok = tokenizer::load(set.tokenizer_path().unwrap()).unwrap();
    let mut ids = vec![0; set.train().len()];
    set.train().read(0, &mut ids);
    let docs: Vec<String> = tok
        .decode(&ids)
        .split("<|endoftext|>")
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(docs.len(), 4, "{docs:?}");
    assert_eq!(docs.concat(), want);

    let config = train::TrainConfig {
        vocab_size: 300,
        pattern: Pattern::Gpt2,
        specials: vec![],
        skip_invalid_utf8: false,
    };
    let (from_files, report) = train::train_files(std::slice::from_ref(&dir), &config).unwrap();
    assert_eq!(report.corpus_bytes, want.len() as u64);
    let (from_text, _) = train::train_text(want, &config).unwrap();
    assert!(from_files.to_hf_json().unwrap() == from_text.to_hf_json().unwrap());
}

/// Text whose lines are all separated by blank lines has no newline between
/// two non-white-space characters: it is cut after `\n\n` + text, where
/// GPT-4's pattern still splits (GPT-2's splits one newline earlier).
#[test]
fn blank_line_separated_text_is_cut_after_the_blank_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paragraphs.txt");
    let paragraphs = ["One paragraph, one line.", "  Indented one.", "Ünïcødé 🎉."];
    let text: String = (0..150_000)
        .map(|i| format!("{}\n\n", paragraphs[i % paragraphs.len()]))
        .collect();
    std::fs::write(&path, &text).unwrap();
    let pieces = pieces_of(&path, &ReadOptions::default());
    assert!(pieces.len() >= 2, "{} pieces", pieces.len());
    for p in &pieces[..pieces.len() - 1] {
        assert!(p.text.ends_with("\n\n"), "cut after a blank line");
    }
    let split = |pattern: Pattern, text: &str| -> Vec<String> {
        pattern.split(text).map(str::to_string).collect()
    };
    let by_piece: Vec<String> = pieces
        .iter()
        .flat_map(|p| split(Pattern::Gpt4, &p.text))
        .collect();
    assert!(
        by_piece == split(Pattern::Gpt4, &text),
        "GPT-4 splits there too"
    );
}
