//! `lmforge prepare` and token shards end to end: every input format (files made
//! here, in the test), the split, resume after an interruption, corrupt and
//! non-UTF-8 inputs, and the shard layouts `ShardSet` reads.

use lmforge::data::TokenSource;
use lmforge::data::prepare::{OnBad, PrepareOptions, PrepareReport, prepare};
use lmforge::data::shards::{HEADER_BYTES, Layout, ShardSet};
use lmforge::tokenizer::TokenizerSpec;
use std::io::Write;
use std::path::{Path, PathBuf};

const DOCS: [&str; 3] = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "All:\nSpeak, speak.\r\n",
    "\u{feff}Ünïcødé and 🎉 too",
];

/// What the train split should decode to when every document lands in it.
fn expected_text(docs: &[&str]) -> String {
    docs.iter()
        .map(|d| {
            let d = d
                .strip_prefix('\u{feff}')
                .unwrap_or(d)
                .replace("\r\n", "\n");
            format!("<|endoftext|>{d}")
        })
        .collect()
}

fn opts(inputs: &[&Path], out: &Path) -> PrepareOptions {
    let inputs = inputs.iter().map(|p| p.display().to_string()).collect();
    let mut o = PrepareOptions::new(inputs, TokenizerSpec::Char, out);
    o.val_fraction = 0.0;
    o.threads = 2;
    o
}

fn tokens(source: &dyn TokenSource) -> Vec<u32> {
    let mut out = vec![0; source.len()];
    source.read(0, &mut out);
    out
}

/// The train split of a prepared directory, decoded with its tokenizer.
fn train_text(dir: &Path) -> String {
    let set = ShardSet::open(dir).unwrap();
    let tok = lmforge::tokenizer::load(set.tokenizer_path().unwrap()).unwrap();
    tok.decode(&tokens(set.train()))
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zst(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 1).unwrap()
}

fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn txt_members() -> Vec<(String, Vec<u8>)> {
    DOCS.iter()
        .enumerate()
        .map(|(i, d)| (format!("doc{i}.txt"), d.as_bytes().to_vec()))
        .collect()
}

fn tar_of_docs() -> Vec<u8> {
    let m = txt_members();
    let refs: Vec<(&str, &[u8])> = m.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    tar(&refs)
}

fn jsonl() -> Vec<u8> {
    let mut s = String::new();
    for d in DOCS {
        s += &serde_json::json!({ "id": 1, "text": d }).to_string();
        s += "\n";
    }
    s.into_bytes()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn every_input_format_gives_the_same_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // OpenWebText's layout: a tar of .xz files, each an xz-compressed tar of .txt.
    let m = txt_members();
    let subset1 = tar(&[(&m[0].0, &m[0].1), (&m[1].0, &m[1].1)]);
    let subset2 = tar(&[(&m[2].0, &m[2].1)]);
    let owt = tar(&[
        ("openwebtext/urlsf_subset00-1_data.xz", &xz(&subset1)),
        ("openwebtext/urlsf_subset00-2_data.xz", &xz(&subset2)),
    ]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tar", tar_of_docs()),
        ("docs.tar.gz", gz(&tar_of_docs())),
        ("docs.tar.xz", xz(&tar_of_docs())),
        ("docs.tar.zst", zst(&tar_of_docs())),
        ("openwebtext.tar", owt),
        ("docs.jsonl", jsonl()),
        ("docs.jsonl.gz", gz(&jsonl())),
        ("docs.jsonl.zst", zst(&jsonl())),
        // No .jsonl name: recognised from its first byte.
        ("records.xz", xz(&jsonl())),
    ];
    for (name, bytes) in &cases {
        let input = write(&t.join("in"), name, bytes);
        let out = t.join(format!("out-{name}"));
        let report = prepare(&opts(&[&input], &out)).unwrap();
        assert_eq!(report.documents, 3, "{name}");
        assert_eq!(train_text(&out), expected_text(&DOCS), "{name}");
    }
    // Plain and compressed text files (one document each), found by walking a
    // directory and by a glob.
    let dir = t.join("plain");
    write(&dir, "a/0.txt", DOCS[0].as_bytes());
    write(&dir, "b/1.gz", &gz(DOCS[1].as_bytes()));
    write(&dir, "b/2.txt.xz", &xz(DOCS[2].as_bytes()));
    write(&dir, ".hidden", b"not read");
    let out = t.join("out-dir");
    prepare(&opts(&[&dir], &out)).unwrap();
    assert_eq!(train_text(&out), expected_text(&DOCS));
    let pattern = t.join("plain/*/*");
    let out = t.join("out-glob");
    let report = prepare(&opts(&[&pattern], &out)).unwrap();
    assert_eq!(report.inputs_read, 3);
    assert_eq!(train_text(&out), expected_text(&DOCS));
}

#[test]
fn jsonl_text_field_is_configurable_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "d.jsonl",
        b"{\"body\": \"hi\"}\n\n{\"body\": \"yo\"}\n",
    );
    let mut o = opts(&[&input], &tmp.path().join("a"));
    o.text_field = "body".into();
    prepare(&o).unwrap();
    assert_eq!(train_text(&o.out), "<|endoftext|>hi<|endoftext|>yo");
    let err = prepare(&opts(&[&input], &tmp.path().join("b")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("d.jsonl") && err.contains("line 1") && err.contains("\"text\""),
        "{err}"
    );
}

fn many_docs(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s += &serde_json::json!({ "text": format!("document number {i}\n") }).to_string();
        s += "\n";
    }
    s.into_bytes()
}

#[test]
fn split_is_by_document_seeded_and_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "docs.jsonl", &many_docs(4000));
    let run = |name: &str, seed: u64| {
        let mut o = opts(&[&input], &tmp.path().join(name));
        o.val_fraction = 0.1;
        o.seed = seed;
        prepare(&o).unwrap();
        let set = ShardSet::open(&o.out).unwrap();
        (tokens(set.train()), tokens(set.val()))
    };
    let (a_train, a_val) = run("a", 7);
    let (b_train, b_val) = run("b", 7);
    let (c_train, _) = run("c", 8);
    assert_eq!(
        (&a_train, &a_val),
        (&b_train, &b_val),
        "same seed, same split"
    );
    assert_ne!(a_train, c_train, "another seed, another split");
    // Whole documents (each under 1/1024 of the corpus): every split starts
    // with the end-of-text token, and about 10% of the 4000 documents are in
    // val (standard deviation 19).
    let eot = *a_train.first().unwrap();
    assert_eq!(a_val.first(), Some(&eot));
    let val_docs = a_val.iter().filter(|&&t| t == eot).count();
    let train_docs = a_train.iter().filter(|&&t| t == eot).count();
    assert_eq!(val_docs + train_docs, 4000);
    assert!((320..=480).contains(&val_docs), "{val_docs} val documents");
}

/// The validation share of a prepared directory's tokens, and the report.
fn val_share(inputs: &[&Path], out: &Path, fraction: f64) -> (f64, PrepareReport) {
    let mut o = opts(inputs, out);
    o.val_fraction = fraction;
    let report = prepare(&o).unwrap();
    let set = ShardSet::open(out).unwrap();
    let (train, val) = (set.train().len(), set.val().len());
    assert_eq!(
        (train as u64, val as u64),
        (report.train_tokens, report.val_tokens)
    );
    (val as f64 / (train + val) as f64, report)
}

/// A text of `lines` lines, about 40 bytes each.
fn play(lines: usize, tag: &str) -> String {
    (0..lines)
        .map(|i| format!("{tag} line {i}: now is the winter of our discontent\n"))
        .collect()
}

/// Issue 30 item 4: one file, and four files, give about `--val-fraction` of
/// their tokens to validation (each file's tail) and no warning; the head
/// stays in train, in order.
#[test]
fn one_file_and_four_files_validate_their_tails() {
    let tmp = tempfile::tempdir().unwrap();
    let one = write(tmp.path(), "one.txt", play(2000, "one").as_bytes());
    let (share, report) = val_share(&[&one], &tmp.path().join("one"), 0.1);
    assert_eq!((report.documents, report.tail_split), (1, 1));
    assert!((share - 0.1).abs() < 0.005, "one file: {share}");
    assert!(report.split_warning.is_none(), "{:?}", report.split_warning);
    // The head trains and the tail validates, cut at the start of a line,
    // each after an end-of-text token.
    let set = ShardSet::open(&tmp.path().join("one")).unwrap();
    let tok = lmforge::tokenizer::load(set.tokenizer_path().unwrap()).unwrap();
    let (train, val) = (
        tok.decode(&tokens(set.train())),
        tok.decode(&tokens(set.val())),
    );
    let (train, val) = (
        train.strip_prefix("<|endoftext|>").unwrap(),
        val.strip_prefix("<|endoftext|>").unwrap(),
    );
    assert!(
        val.starts_with("one line ") && train.ends_with('\n'),
        "{val}"
    );
    assert_eq!(format!("{train}{val}"), play(2000, "one"));

    let four: Vec<PathBuf> = (0..4)
        .map(|i| {
            write(
                tmp.path(),
                &format!("in4/{i}.txt"),
                play(500, &i.to_string()).as_bytes(),
            )
        })
        .collect();
    let refs: Vec<&Path> = four.iter().map(|p| p.as_path()).collect();
    let (share, report) = val_share(&refs, &tmp.path().join("four"), 0.1);
    assert_eq!((report.documents, report.tail_split), (4, 4));
    assert!((share - 0.1).abs() < 0.005, "four files: {share}");
    assert!(report.split_warning.is_none(), "{:?}", report.split_warning);
    // Each tail starts with the end-of-text token: 4 in val, 4 in train.
    let set = ShardSet::open(&tmp.path().join("four")).unwrap();
    let eot = tokens(set.train())[0];
    assert_eq!(tokens(set.val()).iter().filter(|&&t| t == eot).count(), 4);
    assert_eq!(tokens(set.val())[0], eot);
}

/// Many small documents go whole to one split, about `--val-fraction` of
/// them; `--val-fraction 0` puts nothing in validation and warns of nothing.
#[test]
fn many_small_documents_go_whole_and_fraction_zero_validates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "docs.jsonl", &many_docs(5000));
    let (share, report) = val_share(&[&input], &tmp.path().join("many"), 0.1);
    assert_eq!((report.documents, report.tail_split), (5000, 0));
    // 5000 documents of about equal length: the share's standard deviation
    // is sqrt(0.1 * 0.9 / 5000) = 0.004; 0.02 is five of them.
    assert!((share - 0.1).abs() < 0.02, "many documents: {share}");
    assert!(report.split_warning.is_none(), "{:?}", report.split_warning);

    let one = write(tmp.path(), "one.txt", play(200, "one").as_bytes());
    for (name, input) in [("zero-many", &input), ("zero-one", &one)] {
        let (share, report) = val_share(&[input], &tmp.path().join(name), 0.0);
        assert_eq!((share, report.split_warning), (0.0, None), "{name}");
    }
}

/// One compressed text (gzip, xz, zstd) is measured by a first pass and
/// split at its tail like the plain file: the same tokens in each split.
#[test]
fn one_compressed_text_validates_its_tail_as_the_plain_file() {
    let tmp = tempfile::tempdir().unwrap();
    let text = play(2000, "one");
    let plain = write(tmp.path(), "plain/one.txt", text.as_bytes());
    let (share, _) = val_share(&[&plain], &tmp.path().join("plain-out"), 0.1);
    assert!((share - 0.1).abs() < 0.005, "plain: {share}");
    let expected = ShardSet::open(&tmp.path().join("plain-out")).unwrap();
    let expected = (tokens(expected.train()), tokens(expected.val()));
    let compressed = [
        ("one.txt.gz", gz(text.as_bytes())),
        ("one.txt.xz", xz(text.as_bytes())),
        ("one.txt.zst", zst(text.as_bytes())),
    ];
    for (name, bytes) in compressed {
        let input = write(tmp.path(), &format!("{name}/{name}"), &bytes);
        let out = tmp.path().join(format!("{name}-out"));
        let (share, report) = val_share(&[&input], &out, 0.1);
        assert_eq!((report.documents, report.tail_split), (1, 1), "{name}");
        assert!((share - 0.1).abs() < 0.005, "{name}: {share}");
        assert!(
            report.split_warning.is_none(),
            "{name}: {:?}",
            report.split_warning
        );
        let set = ShardSet::open(&out).unwrap();
        assert_eq!((tokens(set.train()), tokens(set.val())), expected, "{name}");
    }
}

/// Two documents of unknown length (compressed members of a tar) go whole
/// to one split each: a warning says why.
#[test]
fn a_split_far_from_the_fraction_warns_why() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (gz(play(200, "a").as_bytes()), gz(play(200, "b").as_bytes()));
    let input = write(
        tmp.path(),
        "two.tar",
        &tar(&[("a.txt.gz", &a), ("b.txt.gz", &b)]),
    );
    let (share, report) = val_share(&[&input], &tmp.path().join("out"), 0.1);
    assert_eq!((report.documents, report.tail_split), (2, 0));
    assert!(
        [0.0, 1.0].contains(&share) || (share - 0.5).abs() < 0.01,
        "{share}"
    );
    let warning = report.split_warning.expect("a warning");
    assert!(
        warning.contains("not the 10.0%") && warning.contains("unknown length"),
        "{warning}"
    );
}

/// A directory prepared before the tail rule (no `split` in its settings)
/// still reads, and resuming it is refused by name.
#[test]
fn manifests_without_a_split_rule_read_and_refuse_to_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "one.txt", play(100, "one").as_bytes());
    let out = tmp.path().join("out");
    val_share(&[&input], &out, 0.1);
    let path = out.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(manifest["settings"]["split"], "document-or-tail/1024");
    manifest["settings"]
        .as_object_mut()
        .unwrap()
        .remove("split");
    std::fs::write(&path, manifest.to_string()).unwrap();
    assert!(ShardSet::open(&out).unwrap().val().len() > 0);
    let mut o = opts(&[&input], &out);
    o.val_fraction = 0.1;
    let err = prepare(&o).unwrap_err().to_string();
    assert!(
        err.contains("split rule document (now document-or-tail/1024)"),
        "{err}"
    );
}

#[test]
fn an_interrupted_run_resumes_and_matches_a_one_shot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = write(t, "in/a.jsonl", &many_docs(50));
    let b = write(t, "in/b.txt", b"document number 7\n");
    let broken = write(t, "in/broken.xz", &xz(&many_docs(50))[..100]);
    // A saved tokenizer: no vocabulary pass, so the first run really gets as
    // far as the broken input.
    let mut chars: Vec<char> = "document number 0123456789\n".chars().collect();
    chars.sort();
    chars.dedup();
    let tok_path = t.join("tokenizer.json");
    let tok = lmforge::tokenizer::CharTokenizer::with_specials(chars, true, false).unwrap();
    lmforge::tokenizer::Tokenizer::save(&tok, &tok_path).unwrap();
    let run = |inputs: &[&Path], out: &str| {
        let mut o = opts(inputs, &t.join(out));
        o.tokenizer = TokenizerSpec::File(tok_path.clone());
        o.val_fraction = 0.2;
        o.shard_tokens = 100; // several shards, so resume points fall mid-way
        (prepare(&o), o.out)
    };
    let (one_shot, one_shot_dir) = run(&[&a, &b], "one-shot");
    one_shot.unwrap();

    // The first run dies on the broken input after finishing `a`.
    let (first, dir) = run(&[&a, &broken], "resumed");
    let err = first.unwrap_err().to_string();
    assert!(
        err.contains("broken.xz") && err.contains("corrupt or truncated"),
        "{err}"
    );
    // Leftovers of a crash: an unlisted whole shard and a temporary file.
    write(&dir, "train_000099.bin", b"LMFSHARD stale");
    write(&dir, "val_000099.bin.tmp", b"half");
    let (second, _) = run(&[&a, &b], "resumed");
    let second: PrepareReport = second.unwrap();
    assert_eq!((second.inputs_skipped, second.inputs_read), (1, 1));
    assert!(!dir.join("train_000099.bin").exists() && !dir.join("val_000099.bin.tmp").exists());

    let (x, y) = (
        ShardSet::open(&one_shot_dir).unwrap(),
        ShardSet::open(&dir).unwrap(),
    );
    assert!(x.train().shard_count() > 1);
    assert_eq!(tokens(x.train()), tokens(y.train()));
    assert_eq!(tokens(x.val()), tokens(y.val()));

    // Resuming with other settings is refused.
    let o = opts(&[&a], &dir);
    let err = prepare(&o).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
}

#[test]
fn corrupt_archives_are_fatal_or_skipped_by_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let good = xz(&tar_of_docs());
    let bad_member = gz(DOCS[0].as_bytes());
    let outer = tar(&[
        ("ok.xz", &good),
        ("cut.gz", &bad_member[..bad_member.len() - 12]),
    ]);
    let nested = write(t, "nested.tar", &outer);
    let truncated = write(t, "cut.tar.xz", &good[..good.len() / 2]);
    for input in [&nested, &truncated] {
        let err = prepare(&opts(&[input], &t.join("fatal")))
            .unwrap_err()
            .to_string();
        let name = input.file_name().unwrap().to_string_lossy();
        assert!(
            err.contains(name.as_ref()) && err.contains("corrupt or truncated"),
            "{err}"
        );
        // A prepare that fails before writing anything leaves no folder.
        let _ = std::fs::remove_dir_all(t.join("fatal"));
    }
    let mut o = opts(&[&nested, &truncated], &t.join("skip"));
    o.on_bad_archive = OnBad::Skip;
    let report = prepare(&o).unwrap();
    assert_eq!(report.bad_archives.len(), 2, "{:?}", report.bad_archives);
    assert!(report.bad_archives[0].contains("nested.tar:cut.gz"));
    assert!(report.bad_archives[1].contains("cut.tar.xz"));
    // Everything of the intact member is there.
    assert!(train_text(&o.out).starts_with(&expected_text(&DOCS)));
}

#[test]
fn bad_utf8_is_fatal_with_file_and_offset_or_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "mixed.tar",
        &tar(&[("good.txt", b"fine text"), ("bad.txt", b"bad \xff byte")]),
    );
    let err = prepare(&opts(&[&input], &tmp.path().join("a")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mixed.tar:bad.txt") && err.contains("offset 4"),
        "{err}"
    );
    let mut o = opts(&[&input], &tmp.path().join("b"));
    o.on_bad_utf8 = OnBad::Skip;
    let report = prepare(&o).unwrap();
    assert_eq!((report.documents, report.skipped_bad_utf8), (1, 1));
    assert_eq!(train_text(&o.out), "<|endoftext|>fine text");
}

#[test]
fn empty_inputs_are_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = write(tmp.path(), "empty.txt", b"");
    let err = prepare(&opts(&[&empty], &tmp.path().join("out")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no text found"), "{err}");
    let missing = tmp.path().join("missing.txt");
    let err = prepare(&opts(&[&missing], &tmp.path().join("out2")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.txt"), "{err}");
}

#[test]
fn capped_char_vocabulary_maps_rare_characters_to_unk() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "a.txt", "aaaa bbb cc dz".as_bytes());
    let mut o = opts(&[&input], &tmp.path().join("out"));
    o.char_vocab_max = Some(3);
    let report = prepare(&o).unwrap();
    assert_eq!(report.vocab_size, 5, "a, b, space + <|endoftext|> + <unk>");
    assert_eq!(
        train_text(&o.out),
        "<|endoftext|>aaaa bbb <unk><unk> <unk><unk>"
    );
}

/// The documented numpy one-liner works: a 64-byte header, then raw
/// little-endian tokens; u16 for small vocabularies, u32 past 65,536 ids.
#[test]
fn shards_are_header_plus_raw_little_endian_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let small = write(tmp.path(), "small.txt", b"abcab");
    let wide_text: String = (0x100u32..0x12000)
        .filter_map(char::from_u32)
        .collect::<String>();
    let wide = write(tmp.path(), "wide.txt", wide_text.as_bytes());
    for (input, width) in [(&small, 2usize), (&wide, 4)] {
        let out = tmp.path().join(format!("out{width}"));
        prepare(&opts(&[input], &out)).unwrap();
        let set = ShardSet::open(&out).unwrap();
        let expect = tokens(set.train());
        let bytes = std::fs::read(out.join("train_000000.bin")).unwrap();
        assert_eq!(&bytes[..8], b"LMFSHARD");
        assert_eq!(
            u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
            width as u32
        );
        let count = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        assert_eq!(count, expect.len());
        assert_eq!(bytes.len(), HEADER_BYTES + count * width);
        let raw: Vec<u32> = bytes[HEADER_BYTES..]
            .chunks_exact(width)
            .map(|c| c.iter().rev().fold(0u32, |acc, &b| acc << 8 | b as u32))
            .collect();
        assert_eq!(raw, expect);
        assert_eq!(
            train_text(&out),
            format!("<|endoftext|>{}", std::fs::read_to_string(input).unwrap())
        );
    }
}

fn u16_bytes(tokens: &[u16]) -> Vec<u8> {
    tokens.iter().flat_map(|t| t.to_le_bytes()).collect()
}

#[test]
fn nanogpt_and_llmc_layouts_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let nano = tmp.path().join("nano");
    write(&nano, "train.bin", &u16_bytes(&[1, 2, 3, 50256]));
    write(&nano, "val.bin", &u16_bytes(&[9]));
    let set = ShardSet::open(&nano).unwrap();
    assert_eq!(set.layout(), Layout::NanoGpt);
    assert_eq!(
        (tokens(set.train()), tokens(set.val())),
        (vec![1, 2, 3, 50256], vec![9])
    );
    assert_eq!(set.vocab_size(), None);

    let llmc = tmp.path().join("llmc");
    let shard = |tokens: &[u16]| {
        let mut header = [0i32; 256];
        header[0] = 20240520;
        header[1] = 1;
        header[2] = tokens.len() as i32;
        let mut bytes: Vec<u8> = header.iter().flat_map(|h| h.to_le_bytes()).collect();
        bytes.extend(u16_bytes(tokens));
        bytes
    };
    write(&llmc, "fineweb_train_000002.bin", &shard(&[4, 5]));
    write(&llmc, "fineweb_train_000001.bin", &shard(&[1, 2, 3]));
    write(&llmc, "fineweb_val_000000.bin", &shard(&[7]));
    let set = ShardSet::open(&llmc).unwrap();
    assert_eq!(set.layout(), Layout::LlmC);
    assert_eq!(
        tokens(set.train()),
        vec![1, 2, 3, 4, 5],
        "sorted by name, joined"
    );
    assert_eq!(tokens(set.val()), vec![7]);

    // Errors name the file.
    let mut bad = shard(&[1, 2, 3]);
    bad[0] = 0;
    write(&llmc, "fineweb_val_000000.bin", &bad);
    let err = ShardSet::open(&llmc).err().unwrap().to_string();
    assert!(
        err.contains("fineweb_val_000000.bin") && err.contains("bad magic"),
        "{err}"
    );
    write(&llmc, "fineweb_val_000000.bin", &shard(&[1, 2, 3])[..1028]);
    let err = ShardSet::open(&llmc).err().unwrap().to_string();
    assert!(
        err.contains("fineweb_val_000000.bin") && err.contains("truncated"),
        "{err}"
    );
    write(&nano, "val.bin", &[1, 2, 3]);
    let err = ShardSet::open(&nano).err().unwrap().to_string();
    assert!(
        err.contains("val.bin") && err.contains("whole number"),
        "{err}"
    );
    let err = ShardSet::open(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("no shards found"), "{err}");
}

#[test]
fn truncated_or_foreign_lmforge_shards_are_reported_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "a.txt", DOCS[0].as_bytes());
    let out = tmp.path().join("out");
    prepare(&opts(&[&input], &out)).unwrap();
    let shard = out.join("train_000000.bin");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let err = ShardSet::open(&out).err().unwrap().to_string();
    assert!(
        err.contains("train_000000.bin") && err.contains("truncated"),
        "{err}"
    );
    let mut foreign = bytes.clone();
    foreign[..8].copy_from_slice(b"NOTASHRD");
    std::fs::write(&shard, &foreign).unwrap();
    let err = ShardSet::open(&out).err().unwrap().to_string();
    assert!(
        err.contains("train_000000.bin") && err.contains("bad magic"),
        "{err}"
    );
    std::fs::write(&shard, &bytes[..10]).unwrap();
    let err = ShardSet::open(&out).err().unwrap().to_string();
    assert!(
        err.contains("train_000000.bin") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn cli_prepares_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "a.txt.gz", &gz(DOCS[0].as_bytes()));
    let out = tmp.path().join("out");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lmforge"))
            .arg("prepare")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = run(&[
        input.to_str().unwrap(),
        "--tokenizer",
        "char",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("1 documents"), "{stdout}");
    // Only warnings (this one document leaves the training split empty); no
    // progress bar when stderr is not a terminal.
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(
        !stderr.contains('\r') && stderr.lines().all(|l| l.starts_with("warning:")),
        "no progress bar when stderr is not a terminal: {stderr}"
    );
    let bad = run(&[
        "nope*.txt",
        "--tokenizer",
        "char",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("nope*.txt"),
        "{stderr}"
    );
}

/// Workers finish out of order; the shards must not depend on how many there are.
#[test]
fn output_does_not_depend_on_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let subsets: Vec<(String, Vec<u8>)> = (0..12)
        .map(|s| {
            let docs: Vec<(String, Vec<u8>)> = (0..20)
                .map(|d| {
                    (
                        format!("{s}-{d}.txt"),
                        format!("subset {s} doc {d}\n").repeat(d + 1).into_bytes(),
                    )
                })
                .collect();
            let refs: Vec<(&str, &[u8])> = docs
                .iter()
                .map(|(n, b)| (n.as_str(), b.as_slice()))
                .collect();
            (format!("owt/urlsf_subset00-{s}_data.xz"), xz(&tar(&refs)))
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = subsets
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let input = write(tmp.path(), "owt.tar", &tar(&refs));
    let run = |threads: usize| {
        let mut o = opts(&[&input], &tmp.path().join(format!("out{threads}")));
        o.threads = threads;
        o.val_fraction = 0.3;
        let report = prepare(&o).unwrap();
        assert_eq!(report.documents, 240);
        let set = ShardSet::open(&o.out).unwrap();
        (tokens(set.train()), tokens(set.val()))
    };
    let one = run(1);
    assert!(!one.1.is_empty());
    assert_eq!(one, run(4));
}

/// FineWeb's layout: Parquet with a string `text` column among others.
#[test]
fn parquet_text_column_is_read() {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("000_00000.parquet");
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { required binary id (UTF8); required binary text (UTF8); required int64 token_count; }",
        )
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    for docs in [&DOCS[..2], &DOCS[2..]] {
        let mut group = writer.next_row_group().unwrap();
        let mut index = 0;
        while let Some(mut column) = group.next_column().unwrap() {
            let n = docs.len() as i64;
            match index {
                0 => {
                    let ids: Vec<ByteArray> =
                        docs.iter().map(|_| ByteArray::from("urn:x")).collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&ids, None, None)
                        .unwrap();
                }
                1 => {
                    let texts: Vec<ByteArray> = docs.iter().map(|d| ByteArray::from(*d)).collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&texts, None, None)
                        .unwrap();
                }
                _ => {
                    column
                        .typed::<Int64Type>()
                        .write_batch(&vec![n; docs.len()], None, None)
                        .unwrap();
                }
            }
            column.close().unwrap();
            index += 1;
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
    let out = tmp.path().join("out");
    let report = prepare(&opts(&[&path], &out)).unwrap();
    assert_eq!(report.documents, 3);
    assert_eq!(train_text(&out), expected_text(&DOCS));
    let mut o = opts(&[&path], &tmp.path().join("out2"));
    o.text_field = "content".into();
    let err = prepare(&o).unwrap_err().to_string();
    assert!(
        err.contains("000_00000.parquet") && err.contains("no column \"content\""),
        "{err}"
    );
}

/// A document longer than a piece, without a single newline, is read in
/// bounded pieces and still comes out whole, after one end-of-text token.
#[test]
fn a_long_document_without_newlines_is_one_document() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "abc é 🎉 ".repeat((3 << 20) / 13);
    let input = write(tmp.path(), "long.txt", text.as_bytes());
    let out = tmp.path().join("out");
    let report = prepare(&opts(&[&input], &out)).unwrap();
    assert_eq!(report.documents, 1);
    assert!(train_text(&out) == format!("<|endoftext|>{text}"));
}
