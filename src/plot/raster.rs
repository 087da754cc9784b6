//! SVG to PNG: `resvg` draws the document with DejaVu Sans embedded in the
//! binary (the `dejavu` crate), so no system font, fontconfig or freetype
//! is needed and the picture is the same on every machine.

use crate::error::{Error, Result};
use resvg::{tiny_skia, usvg};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The font database, built once per process (the fonts are in the binary).
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_font_data(dejavu::sans::regular().to_vec());
            db.load_font_data(dejavu::sans::bold().to_vec());
            db.set_sans_serif_family("DejaVu Sans");
            Arc::new(db)
        })
        .clone()
}

/// Render an SVG document to PNG bytes at its own size.
pub fn svg_to_png(svg: &str, path_for_errors: &Path) -> Result<Vec<u8>> {
    let options = usvg::Options {
        font_family: "DejaVu Sans".into(),
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let bad = |message: String| Error::format(path_for_errors, message);
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| bad(format!("SVG: {e}")))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| {
        bad(format!(
            "cannot draw a {}x{} picture",
            size.width(),
            size.height()
        ))
    })?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| bad(format!("PNG: {e}")))
}
