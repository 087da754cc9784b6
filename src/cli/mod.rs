//! Command-line front end: one file per subcommand; each parses its flags,
//! calls one library function and prints.

pub mod tokenizer;
