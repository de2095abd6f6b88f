//! `sightline query "SQL"`: a table, JSON or CSV.

use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};

use super::client::{ApiClient, plain};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL query (tables: spans, logs, metrics).
    pub sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let answer = client
        .post("/api/v1/query", &json!({"sql": args.sql}), "query")
        .await?;
    let columns: Vec<String> = answer["columns"]
        .as_array()
        .map(|c| c.iter().map(|c| plain(&c["name"])).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<Value>> = answer["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let truncated = answer["truncated"].as_bool().unwrap_or(false);
    let cut = match answer["truncated_by"].as_str() {
        Some("max_result_bytes") => {
            "cut at the server's answer size limit ([query] max_result_bytes)"
        }
        _ => "cut at the server's row limit ([query] max_result_rows)",
    };
    print!("{}", render(args.format, &columns, &rows));
    if let Format::Table = args.format {
        let elapsed = answer["elapsed_ms"].as_f64().unwrap_or(0.0);
        eprintln!(
            "{} row{} in {elapsed:.1} ms{}",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            if truncated {
                format!(" ({cut})")
            } else {
                String::new()
            }
        );
    } else if truncated {
        eprintln!("warning: the result was {cut}");
    }
    Ok(())
}

pub fn render(format: Format, columns: &[String], rows: &[Vec<Value>]) -> String {
    match format {
        Format::Table => {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            table.set_header(columns);
            for row in rows {
                table.add_row(row.iter().map(plain));
            }
            format!("{table}\n")
        }
        Format::Json => {
            let objects: Vec<Value> = rows
                .iter()
                .map(|row| {
                    Value::Object(
                        columns
                            .iter()
                            .cloned()
                            .zip(row.iter().cloned())
                            .collect::<Map<_, _>>(),
                    )
                })
                .collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&objects).unwrap_or_default()
            )
        }
        Format::Csv => {
            let mut out = csv_line(columns.iter().cloned());
            for row in rows {
                out.push_str(&csv_line(row.iter().map(plain)));
            }
            out
        }
    }
}

fn csv_line(cells: impl Iterator<Item = String>) -> String {
    let cells: Vec<String> = cells
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c
            }
        })
        .collect();
    format!("{}\n", cells.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_cells_that_need_it_and_json_keys_rows_by_column() {
        let columns = vec!["a".to_string(), "b".to_string()];
        let rows = vec![
            vec![json!("x,y"), json!(3)],
            vec![json!("say \"hi\""), Value::Null],
        ];
        assert_eq!(
            render(Format::Csv, &columns, &rows),
            "a,b\n\"x,y\",3\n\"say \"\"hi\"\"\",\n"
        );
        let parsed: Value =
            serde_json::from_str(&render(Format::Json, &columns, &rows)).expect("json");
        assert_eq!(parsed[0]["b"], 3);
        assert!(render(Format::Table, &columns, &rows).contains("x,y"));
    }
}
