//! Many rows in one parameter: a statement's rows handed to the database as one JSON array
//! of objects, read back as a table (`json_to_recordset` in Postgres, `json_each` in SQLite).
//!
//! One statement text then serves any number of rows: it is prepared once per connection,
//! never runs into a parameter limit, and a group commit writes each table with one
//! statement however many writes it holds (`messages::grouped`).

use serde_json::{Map, Value};

use super::Dialect;

/// The SQL type a column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    /// `TEXT` (a JSON string or null).
    Text(&'static str),
    /// `BIGINT` (a JSON integer or null).
    BigInt(&'static str),
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Self::Text(name) | Self::BigInt(name) => name,
        }
    }
}

/// A table source `… AS {alias}` with `columns`, read from the JSON array bound as
/// parameter `$param`.
pub(crate) fn source(dialect: Dialect, param: usize, alias: &str, columns: &[Column]) -> String {
    match dialect {
        Dialect::Postgres => {
            let definitions = columns
                .iter()
                .map(|column| match column {
                    Column::Text(name) => format!("{name} text"),
                    Column::BigInt(name) => format!("{name} bigint"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("json_to_recordset(${param}::json) AS {alias} ({definitions})")
        }
        Dialect::Sqlite => {
            let fields = columns
                .iter()
                .map(|column| format!("json_extract(value, '$.{0}') AS {0}", column.name()))
                .collect::<Vec<_>>()
                .join(", ");
            format!("(SELECT {fields} FROM json_each(${param})) AS {alias}")
        }
    }
}

/// Rows for [`source`], built one object at a time.
#[derive(Debug, Default)]
pub(crate) struct Rows(Vec<Value>);

impl Rows {
    /// Adds a row: (column name, value) pairs.
    pub(crate) fn push<const N: usize>(&mut self, fields: [(&str, Value); N]) {
        let row: Map<String, Value> = fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        self.0.push(Value::Object(row));
    }

    /// The JSON array to bind.
    pub(crate) fn into_json(self) -> String {
        Value::Array(self.0).to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_source_reads_named_columns_from_one_parameter() {
        let columns = [Column::Text("t"), Column::BigInt("n")];
        assert_eq!(
            source(Dialect::Postgres, 2, "x", &columns),
            "json_to_recordset($2::json) AS x (t text, n bigint)"
        );
        assert_eq!(
            source(Dialect::Sqlite, 1, "x", &columns),
            "(SELECT json_extract(value, '$.t') AS t, json_extract(value, '$.n') AS n \
             FROM json_each($1)) AS x"
        );
        let mut rows = Rows::default();
        rows.push([("t", json!("a\"b")), ("n", json!(7))]);
        rows.push([("t", Value::Null), ("n", json!(-1))]);
        assert_eq!(
            rows.into_json(),
            r#"[{"n":7,"t":"a\"b"},{"n":-1,"t":null}]"#
        );
    }
}
