//! The `lmforge chat` session: read a line, answer it, streaming the reply
//! token by token; repeat.
//!
//! - At a terminal: line editing and history (`rustyline`; the history file
//!   is [`ChatOptions::history`]). Ctrl-C during a reply stops the reply and
//!   keeps the session (what was printed stays in the conversation); Ctrl-C
//!   at the prompt clears the line; Ctrl-D (or `/quit`) ends the session.
//! - With input piped (stdin not a terminal): each line is answered in turn
//!   and the session ends at `/quit` or at the end of the input. Standard
//!   output then holds only the replies, each followed by a line
//!   [`SEPARATOR`], so that scripts can split them; notices go to stderr.
//!
//! Commands: `/reset` (forget the turns), `/system TEXT` (set the system
//! message; empty clears it), `/temperature X`, `/help`, `/quit`.

use super::conversation::{BASE_STOP, Conversation, Fitted};
use super::format::ChatFormat;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Model, Weights};
use crate::sample::{Flow, Generator, Reply, SampleOptions};
use crate::tokenizer::Tokenizer;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The line after each reply when input is piped.
pub const SEPARATOR: &str = "---";

const HELP: &str = "commands:
  /reset           forget the conversation (the system message stays)
  /system TEXT     set the system message (/system alone clears it)
  /temperature X   set the sampling temperature (0 = greedy)
  /help            this list
  /quit            leave (or Ctrl-D); Ctrl-C stops a reply";

/// Set by Ctrl-C (at a terminal, while a reply is being written).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How to chat.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    pub sampling: SampleOptions,
    /// The system message to start with.
    pub system: Option<String>,
    /// Where line history is kept between sessions (terminal only).
    pub history: Option<PathBuf>,
    /// After each reply, print time to first token and tokens/s (stderr).
    pub stats: bool,
    /// Before each reply, print the prompt's token count and text (stderr).
    pub verbose: bool,
    /// The type the weights are kept in (`--weights`; `None`: the run's own).
    pub weights: Option<crate::backend::WeightType>,
}

/// Chat with the run in `run_dir` on `be` until `/quit` or the end of input.
pub fn run<B: Backend>(be: &B, run_dir: &Path, opts: ChatOptions) -> Result<()> {
    opts.sampling.validate()?;
    let (model, loaded, tok) = crate::sample::load_run_as(be, run_dir, opts.weights)?;
    let params = loaded.weights();
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
            .map_err(|e| Error::io("<Ctrl-C handler>", std::io::Error::other(e)))?;
        Input::terminal(opts.history.clone())?
    } else {
        Input::Piped(std::io::stdin().lock())
    };
    let format = ChatFormat::find(run_dir, tok.as_ref())?;
    let mut session = Session::new(be, &model, params, tok.as_ref(), format, opts, interactive)?;
    if interactive {
        session.banner(run_dir);
    }
    while let Some(line) = input.read_line()? {
        if session.handle(&line)? == Flow::Stop {
            break;
        }
    }
    input.save_history();
    Ok(())
}

/// Where lines come from.
enum Input {
    Terminal {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    Piped(std::io::StdinLock<'static>),
}

impl Input {
    fn terminal(history: Option<PathBuf>) -> Result<Input> {
        let mut editor = rustyline::DefaultEditor::new().map_err(terminal_error)?;
        if let Some(path) = &history {
            // A missing file is a first session; an unreadable one only loses history.
            let _ = editor.load_history(path);
        }
        Ok(Input::Terminal {
            editor: Box::new(editor),
            history,
        })
    }

    /// The next line (without its newline); `None` at the end of input.
    fn read_line(&mut self) -> Result<Option<String>> {
        use rustyline::error::ReadlineError;
        match self {
            Input::Terminal { editor, .. } => loop {
                match editor.readline("> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Ok(Some(line));
                    }
                    Err(ReadlineError::Interrupted) => continue, // Ctrl-C: a fresh line
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(terminal_error(e)),
                }
            },
            Input::Piped(stdin) => {
                let mut line = String::new();
                let n = stdin
                    .read_line(&mut line)
                    .map_err(|e| Error::io("<stdin>", e))?;
                let end = line.trim_end_matches(['\n', '\r']).len();
                line.truncate(end);
                Ok((n > 0).then_some(line))
            }
        }
    }

    fn save_history(&mut self) {
        if let Input::Terminal {
            editor,
            history: Some(path),
        } = self
            && let Err(e) = editor.save_history(path)
        {
            eprintln!("(could not save the history to {}: {e})", path.display());
        }
    }
}

fn terminal_error(e: rustyline::error::ReadlineError) -> Error {
    Error::io("<terminal>", std::io::Error::other(e))
}

/// One chat: the model, the conversation and the options in force.
struct Session<'a, B: Backend> {
    generator: Generator<'a, B>,
    tok: &'a dyn Tokenizer,
    chat: Conversation,
    opts: ChatOptions,
    block_size: usize,
    interactive: bool,
}

impl<'a, B: Backend> Session<'a, B> {
    fn new(
        be: &'a B,
        model: &'a Model,
        params: Weights<'a, B>,
        tok: &'a dyn Tokenizer,
        format: Option<ChatFormat>,
        mut opts: ChatOptions,
        interactive: bool,
    ) -> Result<Self> {
        let stops = super::stop_tokens(format.as_ref(), tok);
        let generator = Generator::new(be, model, params, opts.sampling.seed, stops)?;
        if format.is_none() {
            opts.sampling.stop.push(BASE_STOP.to_string());
        }
        let mut chat = Conversation::new(format);
        chat.set_system(opts.system.as_deref().unwrap_or(""));
        Ok(Session {
            generator,
            tok,
            chat,
            opts,
            block_size: model.config.block_size,
            interactive,
        })
    }

    fn banner(&self, run_dir: &Path) {
        let mode = match self.chat.format() {
            Some(format) => format!(
                "chat model: talks through its chat template ({})",
                format.describe()
            ),
            None => "base model: continues your text; a reply ends at a blank line".to_string(),
        };
        eprintln!(
            "lmforge chat {} ({mode}; context {} tokens)\n/help lists the commands; Ctrl-C stops a reply, Ctrl-D quits.",
            run_dir.display(),
            self.block_size
        );
    }

    /// Act on one input line: a command or a message to answer.
    fn handle(&mut self, line: &str) -> Result<Flow> {
        let line = line.trim_end();
        if let Some(command) = line.strip_prefix('/') {
            return Ok(self.command(command));
        }
        if !line.trim().is_empty() {
            self.answer(line)?;
        }
        Ok(Flow::Continue)
    }

    fn command(&mut self, command: &str) -> Flow {
        let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
        let arg = arg.trim();
        match name {
            "quit" | "exit" => return Flow::Stop,
            "reset" => {
                self.chat.reset();
                eprintln!("(conversation cleared)");
            }
            "system" => {
                self.chat.set_system(arg);
                let what = if arg.is_empty() { "cleared" } else { "set" };
                eprintln!("(system message {what})");
            }
            "temperature" => self.set_temperature(arg),
            "help" => eprintln!("{HELP}"),
            _ => eprintln!("unknown command /{name}; /help lists them"),
        }
        Flow::Continue
    }

    fn set_temperature(&mut self, arg: &str) {
        let mut opts = self.opts.sampling.clone();
        match arg.parse::<f32>() {
            Ok(t) => opts.temperature = t,
            Err(_) => return eprintln!("/temperature needs a number, e.g. /temperature 0.8"),
        }
        match opts.validate() {
            Ok(()) => {
                eprintln!("(temperature {})", opts.temperature);
                self.opts.sampling = opts;
            }
            Err(e) => eprintln!("{}", e.to_string().replace("--temperature", "/temperature")),
        }
    }

    /// Build the prompt for `user`, stream the reply, record the turn.
    fn answer(&mut self, user: &str) -> Result<()> {
        let Some(fitted) = self.fit(user)? else {
            return Ok(());
        };
        if self.opts.verbose {
            let mode = if self.chat.format().is_some() {
                "template"
            } else {
                "continue"
            };
            let text = self.tok.decode(&fitted.ids);
            eprintln!("[prompt: {} tokens ({mode}): {text:?}]", fitted.ids.len());
        }
        INTERRUPTED.store(false, Ordering::SeqCst);
        let (reply, timing) = self.stream(&fitted.ids)?;
        let mut stdout = std::io::stdout().lock();
        let tail = if self.interactive {
            "\n".to_string()
        } else {
            format!("\n{SEPARATOR}\n")
        };
        stdout
            .write_all(tail.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(|e| Error::io("<stdout>", e))?;
        if reply.finish == crate::sample::Finish::Interrupted {
            eprintln!("(reply stopped)");
        }
        if self.opts.stats {
            let reused = self.generator.reused_positions();
            eprintln!(
                "{}",
                timing.line(fitted.ids.len(), reused, reply.tokens.len())
            );
        }
        self.chat.push(user, &reply.text);
        Ok(())
    }

    /// The prompt for `user` within the window, telling the user about any
    /// turns dropped; `None` (after saying why) if the text cannot be encoded.
    fn fit(&mut self, user: &str) -> Result<Option<Fitted>> {
        let max_new = self.opts.sampling.max_new_tokens;
        let budget = self.block_size - max_new.min(self.block_size / 2);
        let fitted = match self.chat.prompt(self.tok, user, budget) {
            Ok(fitted) => fitted,
            Err(Error::OutOfVocabulary(chars)) => {
                eprintln!("(the model's vocabulary has no {chars}: say it another way)");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if fitted.dropped > 0 {
            let turns = match fitted.dropped {
                1 => "turn".to_string(),
                n => format!("{n} turns"),
            };
            eprintln!(
                "(the conversation outgrew the model's context of {} tokens: dropped the oldest {turns})",
                self.block_size
            );
        }
        if fitted.too_long {
            eprintln!("(this message alone fills the context: the model sees only its end)");
        }
        Ok(Some(fitted))
    }

    /// Generate the reply to `prompt`, printing it as it comes.
    fn stream(&mut self, prompt: &[u32]) -> Result<(Reply, Timing)> {
        let mut stdout = std::io::stdout().lock();
        let mut timing = Timing::start();
        let reply =
            self.generator
                .generate_text(self.tok, prompt, &self.opts.sampling, |piece| {
                    timing.token();
                    stdout
                        .write_all(piece.as_bytes())
                        .and_then(|_| stdout.flush())
                        .map_err(|e| Error::io("<stdout>", e))?;
                    Ok(match INTERRUPTED.load(Ordering::SeqCst) {
                        true => Flow::Stop,
                        false => Flow::Continue,
                    })
                })?;
        timing.end = Some(Instant::now());
        Ok((reply, timing))
    }
}

/// When a reply started, got its first token, and ended.
struct Timing {
    start: Instant,
    first: Option<Instant>,
    end: Option<Instant>,
}

impl Timing {
    fn start() -> Self {
        Timing {
            start: Instant::now(),
            first: None,
            end: None,
        }
    }

    fn token(&mut self) {
        self.first.get_or_insert_with(Instant::now);
    }

    /// `[stats] prompt_tokens=P reused=C ttft_ms=T tokens=N tok/s=R`: the
    /// time to the first token (the forward of the prompt's positions not
    /// reused from the KV cache, then one draw) and the rate of the tokens
    /// after it.
    fn line(&self, prompt_tokens: usize, reused: usize, tokens: usize) -> String {
        let end = self.end.unwrap_or_else(Instant::now);
        let first = self.first.unwrap_or(end);
        let ttft = first.duration_since(self.start).as_secs_f64() * 1e3;
        let rest = end.duration_since(first).as_secs_f64();
        let rate = if tokens > 1 && rest > 0.0 {
            (tokens - 1) as f64 / rest
        } else {
            0.0
        };
        format!(
            "[stats] prompt_tokens={prompt_tokens} reused={reused} ttft_ms={ttft:.1} tokens={tokens} tok/s={rate:.1}"
        )
    }
}
