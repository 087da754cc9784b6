//! Parquet (FineWeb's layout): one document per row of the `text_field`
//! column; only that column is decoded. Rows whose value is null are
//! skipped; a column that is not a string is an error.

use super::reader::{DocReader, Stop};
use crate::error::Error;
use std::path::Path;

impl DocReader<'_> {
    pub(super) fn read_parquet(&mut self, path: &Path, display: &str) -> Result<(), Stop> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        use parquet::record::Field;
        let bad = |e: parquet::errors::ParquetError| Stop::Archive(display.into(), e.to_string());
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = SerializedFileReader::new(file).map_err(bad)?;
        let field = self.opts.text_field.as_str();
        let schema = reader.metadata().file_metadata().schema_descr();
        let Some(column) = schema.columns().iter().find(|c| c.path().string() == field) else {
            return Err(Stop::Fatal(Error::format(
                display,
                format!("no column {field:?} (see --text-field)"),
            )));
        };
        let projection = parquet::schema::types::Type::group_type_builder("schema")
            .with_fields(vec![column.self_type_ptr()])
            .build()
            .map_err(bad)?;
        let rows = reader.get_row_iter(Some(projection)).map_err(bad)?;
        for (i, row) in rows.enumerate() {
            let row = row.map_err(bad)?;
            match row.get_column_iter().next() {
                Some((_, Field::Str(text))) => self.emit_document(text, display)?,
                Some((_, Field::Null)) => {}
                _ => {
                    return Err(Stop::Fatal(Error::format(
                        display,
                        format!("row {i}: column {field:?} is not a string"),
                    )));
                }
            }
        }
        Ok(())
    }
}
