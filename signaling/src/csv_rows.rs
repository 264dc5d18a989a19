//! Headed CSV uploads (`PUT /v1/org`, `PUT /v1/members`): spreadsheets
//! export them with columns in any order, padded cells and often a UTF-8
//! byte-order mark, so columns are found by name (case-insensitive), cells
//! trimmed and the mark skipped, in one place.

/// The rows of `body` as the cells of `required` then `optional` columns,
/// in that order; a missing optional column reads as empty cells. The
/// error is a sentence for a 400/422 detail.
pub(crate) fn rows(
    body: &[u8],
    required: &[&str],
    optional: &[&str],
) -> Result<Vec<Vec<String>>, String> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| format!("CSV header: {e}"))?
        .clone();
    let position = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let all: Vec<&str> = required.iter().chain(optional).copied().collect();
    let mut columns = Vec::with_capacity(all.len());
    for name in required {
        let column = position(name)
            .ok_or_else(|| format!("the CSV header must have {}; no {name}", all.join(",")))?;
        columns.push(Some(column));
    }
    columns.extend(optional.iter().map(|name| position(name)));
    reader
        .records()
        .map(|record| {
            let record = record.map_err(|e| format!("CSV: {e}"))?;
            Ok(columns
                .iter()
                .map(|c| c.and_then(|i| record.get(i)).unwrap_or("").to_owned())
                .collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_by_name_in_any_order_with_a_bom() {
        let body = b"\xef\xbb\xbfName , ID\n Asha ,m1\nRavi,m2\n";
        let rows = rows(body, &["id", "name"], &["phone"]).unwrap();
        assert_eq!(rows, [["m1", "Asha", ""], ["m2", "Ravi", ""]]);
        let error = rows_error(b"id,name\n", &["id", "unit"]);
        assert!(error.contains("no unit"), "{error}");
    }

    fn rows_error(body: &[u8], required: &[&str]) -> String {
        rows(body, required, &[]).unwrap_err()
    }
}
