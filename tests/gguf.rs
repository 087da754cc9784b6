//! GGUF export and import: the committed Hugging Face fixtures (GPT-2, Llama
//! with Llama 3.1 rope scaling, Qwen2 in bf16, Mistral in f16) go run →
//! GGUF → run; f32 gives the weights back exactly and the same greedy text,
//! q8_0 and q4_0 within their quantization step. The K-quant fixtures
//! (`tools/make_gguf_fixtures.py`, gguf-py's own dequantization) check the
//! block decoders, a SentencePiece vocabulary written by llama.cpp's own
//! converter encodes and decodes as llama.cpp does
//! (`tools/make_gguf_spm_fixture.py`), and damaged files give errors, never panics.

use lmforge::gguf::{self, ExportType, file::GgufFile};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: [&str; 4] = [
    "hf_gpt2/single",
    "hf_llama/llama",
    "hf_llama/qwen2_bf16",
    "hf_llama/mistral_f16",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// An imported run of the fixture `name` in `dir`.
fn run_of(name: &str, dir: &Path) -> PathBuf {
    let run = dir.join(name.replace('/', "_"));
    lmforge::hf::import(fixture(name).to_str().unwrap(), &run).unwrap();
    run
}

fn lmforge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(args)
        .output()
        .unwrap()
}

/// `lmforge sample` greedily from a run directory or a `.gguf` file.
fn greedy(model: &Path) -> String {
    let out = lmforge(&[
        "sample",
        model.to_str().unwrap(),
        "--prompt",
        "the",
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn f32_round_trip_gives_the_weights_and_text_back() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let run = run_of(name, dir.path());
        let (model, params) = lmforge::finetune::load_run(&run).unwrap();
        let file = dir.path().join(format!("{}.gguf", name.replace('/', "_")));
        gguf::export(&run, &file, ExportType::F32).unwrap();
        let back = gguf::read(&file).unwrap();
        assert_eq!(back.params, params, "{name}: f32 weights come back exactly");
        // Given to `sample` as it is: read from the file, no weight file written.
        let opened = gguf::open_run(&file, None).unwrap();
        assert!(
            !opened.path().join("model.safetensors").exists(),
            "{name}: an f32 copy was written"
        );
        let (_, direct, _) = lmforge::sample::load_run(opened.path()).unwrap();
        assert_eq!(direct, params, "{name}: f32 weights read from the file");
        let (a, b) = (&back.model.config, &model.config);
        assert_eq!(
            (
                a.arch,
                a.n_layer,
                a.n_head,
                a.n_embd,
                a.vocab_size,
                a.tie_embeddings,
                a.qkv_bias
            ),
            (
                b.arch,
                b.n_layer,
                b.n_head,
                b.n_embd,
                b.vocab_size,
                b.tie_embeddings,
                b.qkv_bias
            ),
            "{name}"
        );
        let text = greedy(&run);
        assert_eq!(
            greedy(&file),
            text,
            "{name}: the same greedy text from the .gguf"
        );
        let imported = dir.path().join(format!("{}_back", name.replace('/', "_")));
        let out = lmforge(&[
            "import-gguf",
            file.to_str().unwrap(),
            "--out",
            imported.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            greedy(&imported),
            text,
            "{name}: the same greedy text after import-gguf"
        );
    }
}

#[test]
fn quantized_exports_are_within_a_quantization_step() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["hf_gpt2/single", "hf_llama/llama"] {
        let run = run_of(name, dir.path());
        let (model, params) = lmforge::finetune::load_run(&run).unwrap();
        // Q8_0 rounds to half a step of amax / 127; Q4_0's 16 levels run from -8 to 7 steps of
        // amax / 8, so the end opposite the largest value is clipped by up to a whole step.
        for (ty, step) in [
            (ExportType::Q8_0, 0.5 / 127.0),
            (ExportType::Q4_0, 1.0 / 8.0),
        ] {
            let file = dir.path().join("q.gguf");
            gguf::export(&run, &file, ty).unwrap();
            let back = gguf::read(&file).unwrap();
            for t in &model.layout.tensors {
                let (want, got) = (&params[t.range.clone()], &back.params[t.range.clone()]);
                let amax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = want
                    .iter()
                    .zip(got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // At worst the tensor's amax stands for the block's; 1e-3 for the f16 scale.
                let tolerance = if t.shape.len() == 1 {
                    0.0
                } else {
                    amax * (step + 1e-3)
                };
                assert!(
                    worst <= tolerance,
                    "{name} {ty:?} {}: {worst} > {tolerance}",
                    t.name
                );
            }
        }
    }
}

#[test]
fn k_quants_and_quantizers_match_gguf_py() {
    let path = fixture("gguf/kquants.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let file = GgufFile::parse(&bytes, &path).unwrap();
    let values = |name: &str| file.tensor_f32(file.tensor(name).unwrap());
    for name in ["q4_k", "q6_k"] {
        let (ours, theirs) = (values(name), values(&format!("{name}.expected")));
        assert_eq!(ours.len(), theirs.len());
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "{name}: worst difference from gguf-py {worst}"
        );
    }
    for (name, ty) in [
        ("q8_0", gguf::quant::GgmlType::Q8_0),
        ("q4_0", gguf::quant::GgmlType::Q4_0),
    ] {
        let mut ours = Vec::new();
        gguf::quant::quantize(ty, &values(&format!("{name}.source")), &mut ours);
        assert_eq!(
            ours,
            file.tensor_bytes(file.tensor(name).unwrap()),
            "{name}: bytes equal gguf-py's"
        );
    }
}

/// A Llama whose matrices are all whole blocks of 32 (the Llama fixture's
/// 48-wide feed-forward is not), one step trained, with the fixture's tokenizer.
fn llama_of_blocks(dir: &Path, text: &Path) -> PathBuf {
    let run = dir.join("llama64");
    let tokenizer = fixture("hf_llama/llama/tokenizer.json");
    let out = lmforge(&[
        "train",
        "--arch",
        "llama",
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-kv-head",
        "1",
        "--n-embd",
        "64",
        "--block",
        "16",
        "--batch",
        "2",
        "--max-iters",
        "1",
        "--eval-iters",
        "1",
        "--plot",
        "none",
        "-q",
        "--threads",
        "1",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--data",
        text.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

/// `lmforge eval --json`'s total loss of `model` on `text` (every digit),
/// with `--weights` when given.
fn total_loss(model: &Path, text: &Path, weights: Option<&str>) -> String {
    let mut args = vec![
        "eval",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
    ];
    args.extend(["--json", "--threads", "1"]);
    args.extend(weights.map(|w| ["--weights", w]).into_iter().flatten());
    let out = lmforge(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["total_loss"].to_string()
}

/// A `.gguf` given to `eval`/`sample` loads its matrices straight from the
/// file's blocks (GPT-2's fused `attn_qkv`, a Llama's rotary rows put back and
/// `q`/`k`/`v`, `gate`/`up` fused): the same bits as the file imported as a
/// run and packed from f32 with `--weights` of the file's type, so the same
/// loss to the last digit. Without `--weights` a file keeps its own type (f16:
/// f32); a file of another type is dequantized a tensor at a time and packed.
#[test]
fn gguf_blocks_load_natively_as_the_imported_run_packs_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "hello world, the cat sat on the mat.\n".repeat(40)).unwrap();
    let runs = [
        run_of("hf_gpt2/single", dir.path()),
        llama_of_blocks(dir.path(), &text),
    ];
    for run in &runs {
        let name = run.file_name().unwrap().to_string_lossy().into_owned();
        let imported = |ty: ExportType, tag: &str| {
            let file = dir.path().join(format!("{name}.{tag}.gguf"));
            gguf::export(run, &file, ty).unwrap();
            let back = dir.path().join(format!("{name}.{tag}.run"));
            gguf::import(&file, &back).unwrap();
            (file, back)
        };
        let f32_loss = total_loss(run, &text, None);
        for (ty, tag) in [
            (ExportType::Q8_0, "q8_0"),
            (ExportType::Q4_0, "q4_0"),
            (ExportType::Bf16, "bf16"),
        ] {
            let (file, back) = imported(ty, tag);
            let native = total_loss(&file, &text, None);
            assert_eq!(native, total_loss(&back, &text, Some(tag)), "{name} {tag}");
            assert_ne!(
                native, f32_loss,
                "{name} {tag}: the packed weights were used"
            );
        }
        let (file, back) = imported(ExportType::F16, "f16");
        let f16 = total_loss(&file, &text, None);
        assert_eq!(f16, total_loss(&back, &text, None), "{name} f16 as f32");
        let repacked = total_loss(&file, &text, Some("q4_0"));
        assert_eq!(
            repacked,
            total_loss(&back, &text, Some("q4_0")),
            "{name} f16 to q4_0"
        );
        assert_ne!(repacked, f16, "{name}: f16 to q4_0 packed");
    }
    // The Llama fixture's 48-wide feed-forward is not whole blocks (exported in
    // F16 in a q8_0 file): such a file stays f32, as its import does.
    let run = run_of("hf_llama/llama", dir.path());
    let (file, back) = (dir.path().join("ll.gguf"), dir.path().join("ll"));
    gguf::export(&run, &file, ExportType::Q8_0).unwrap();
    gguf::import(&file, &back).unwrap();
    assert_eq!(
        total_loss(&file, &text, None),
        total_loss(&back, &text, None)
    );
}

/// What llama.cpp made of `gguf/spm.gguf`: ids of some texts, a greedy continuation.
fn spm_expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("gguf/spm_expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_sentencepiece_vocabulary_encodes_as_llama_cpp_does() {
    let expected = spm_expected();
    let imported = gguf::read(&fixture("gguf/spm.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, imported.tokenizer.to_string()).unwrap();
    let tokenizer = lmforge::tokenizer::load(&path).unwrap();
    let texts = expected["texts"].as_array().unwrap();
    for (text, ids) in texts.iter().zip(expected["ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(ids.clone()).unwrap();
        assert_eq!(tokenizer.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(tokenizer.decode(&ids), text, "{text:?}");
    }
}

#[test]
fn a_sentencepiece_run_exports_a_vocabulary_that_encodes_the_same() {
    let expected = spm_expected();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    gguf::import(&fixture("gguf/spm.gguf"), &run).unwrap();
    let out = dir.path().join("again.gguf");
    gguf::export(&run, &out, ExportType::F32).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let file = GgufFile::parse(&bytes, &out).unwrap();
    let model = file.get("tokenizer.ggml.model").and_then(|v| v.as_str());
    assert_eq!(model, Some("llama"));
    let imported = gguf::read(&out).unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, imported.tokenizer.to_string()).unwrap();
    let tokenizer = lmforge::tokenizer::load(&path).unwrap();
    let texts = expected["texts"].as_array().unwrap();
    for (text, ids) in texts.iter().zip(expected["ids"].as_array().unwrap()) {
        let ids: Vec<u32> = serde_json::from_value(ids.clone()).unwrap();
        assert_eq!(tokenizer.encode(text.as_str().unwrap()).unwrap(), ids);
    }
}

#[test]
fn a_sentencepiece_gguf_continues_text_as_llama_cpp_does() {
    let expected = spm_expected();
    let prompt = expected["prompt"].as_str().unwrap();
    let out = lmforge(&[
        "sample",
        fixture("gguf/spm.gguf").to_str().unwrap(),
        "--prompt",
        prompt,
        "--temperature",
        "0",
        "--max-new-tokens",
        "16",
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let greedy = expected["greedy_text"].as_str().unwrap();
    assert_eq!(text, format!("{prompt}{greedy}\n"));
}

#[test]
fn a_char_tokenizer_run_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run) = (dir.path().join("text.txt"), dir.path().join("run"));
    std::fs::write(&data, "some words to read, and more words. ".repeat(40)).unwrap();
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let train = [
        "train",
        "--data",
        d,
        "--tokenizer",
        "char",
        "--out",
        r,
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "8",
        "--block",
        "8",
        "--batch",
        "2",
        "--max-iters",
        "1",
        "--eval-iters",
        "1",
        "--threads",
        "1",
        "-q",
    ];
    assert!(lmforge(&train).status.success());
    let out_file = dir.path().join("m.gguf");
    let out = lmforge(&["export-gguf", r, "--out", out_file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("character tokenizer") && err.contains("--tokenizer gpt2"),
        "{err}"
    );
    assert!(!out_file.exists(), "nothing written");
}

/// A file with one key and one F32 tensor, its architecture and the
/// tensor's type and offset given.
fn tiny_file(arch: &str, type_id: u32, offset: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    string(&mut b, arch);
    string(&mut b, "token_embd.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(type_id.to_le_bytes());
    b.extend(offset.to_le_bytes());
    b.resize(b.len().next_multiple_of(32) + 32 * 4 * 4, 0);
    b
}

#[test]
fn bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    for (bytes, expected) in [
        (
            tiny_file("falcon", 0, 0),
            "architecture \"falcon\" is not supported",
        ),
        (tiny_file("llama", 13, 0), "type 13 (Q5_K)"),
        (
            tiny_file("llama", 0, 1 << 20),
            "runs past the end of the file",
        ),
        (tiny_file("llama", 0, 0)[..60].to_vec(), "truncated"),
        (b"GGML....".to_vec(), "not a GGUF file"),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let err = gguf::read(&path).err().expect("refused").to_string();
        assert!(err.contains(expected) && err.contains("bad.gguf"), "{err}");
    }
}

/// An exported file of the GPT-2 fixture, made once.
fn exported() -> &'static Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = run_of("hf_gpt2/single", dir.path());
        let file = dir.path().join("m.gguf");
        gguf::export(&run, &file, ExportType::Q8_0).unwrap();
        std::fs::read(file).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Bytes of the header and tensor table overwritten, or the file cut
    /// short: it reads, or fails naming the file; it never panics.
    #[test]
    fn damaged_files_never_panic(
        at in 0usize..1 << 16, value in any::<u8>(), width in 1usize..9, cut in any::<bool>()
    ) {
        let mut bytes = exported().clone();
        // The metadata and tensor table take the first ~25 KB (the 400-token vocabulary).
        let header_end = bytes.len() - 60_000.min(bytes.len() / 2);
        let at = at % header_end;
        if cut {
            bytes.truncate(at);
        } else {
            for b in &mut bytes[at..(at + width).min(header_end)] {
                *b = value;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.gguf");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = gguf::read(&path) {
            prop_assert!(e.to_string().contains("damaged.gguf"), "{}", e);
        }
    }
}
