//! Building SQL with `$n` placeholders (the form both backends accept) and binding in order.
//! sqlx's `QueryBuilder` for the `Any` driver writes `?`, which PostgreSQL rejects.

use super::db::Backend;

/// Rows per multi-row statement: well under SQLite's parameter limit.
pub(crate) const BATCH: usize = 400;

/// Parameters a multi-row statement binds at most on SQLite. sqlx binds each parameter by
/// asking SQLite its name (`sqlite3_bind_parameter_name`), which SQLite finds by a linear search
/// of the statement's parameters, so binding n parameters costs n^2/2 steps: at 2,000
/// parameters (200 devices' facts) that search was a fifth of the server's CPU under the
/// report-ingest benchmark (docs/BENCHMARKS.md). PostgreSQL binds by position; there the
/// fewer round trips of big statements win.
pub(crate) const SQLITE_MAX_PARAMS: usize = 256;

/// Rows of `params_per_row` parameters each per multi-row statement: at most `max_rows`, and on
/// SQLite at most [`SQLITE_MAX_PARAMS`] parameters (at least one row).
pub(crate) fn rows_per_statement(
    backend: Backend,
    params_per_row: usize,
    max_rows: usize,
) -> usize {
    match backend {
        Backend::Sqlite => (SQLITE_MAX_PARAMS / params_per_row.max(1)).clamp(1, max_rows.max(1)),
        Backend::Postgres => max_rows.max(1),
    }
}

/// `items` in chunks whose lengths are powers of two up to `max` (largest first), so a
/// multi-row statement comes in a handful of texts that each backend prepares once.
pub(crate) fn binary_chunks<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let mut n = max;
        while n > rest.len() {
            n /= 2;
        }
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// Bound values for dynamically built SQL.
pub(crate) enum Param {
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A nullable integer.
    OptInt(Option<i64>),
    /// A nullable string.
    OptText(Option<String>),
}

/// Builds `$n` placeholders in order (the form both backends accept).
#[derive(Default)]
pub(crate) struct Sql {
    text: String,
    params: Vec<Param>,
}

impl Sql {
    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    pub(crate) fn bind(&mut self, p: Param) -> &mut Self {
        self.params.push(p);
        let n = self.params.len();
        self.text.push('$');
        self.text.push_str(&n.to_string());
        self
    }
    pub(crate) fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for p in &self.params {
            q = p.bind_to(q);
        }
        q
    }
}

impl Param {
    /// `q` with this value bound next.
    pub(crate) fn bind_to<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Param::Int(i) => q.bind(*i),
            Param::Text(s) => q.bind(s.as_str()),
            Param::Bytes(b) => q.bind(b.clone()),
            Param::OptInt(i) => q.bind(*i),
            Param::OptText(s) => q.bind(s.clone()),
        }
    }

    /// The value for the SQLite writer's connection (`sqlite_writer.rs`).
    pub(crate) fn to_sqlite(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match self {
            Param::Int(i) => Value::Integer(*i),
            Param::Text(s) => Value::Text(s.clone()),
            Param::Bytes(b) => Value::Blob(b.clone()),
            Param::OptInt(i) => i.map_or(Value::Null, Value::Integer),
            Param::OptText(s) => s.clone().map_or(Value::Null, Value::Text),
        }
    }
}

impl Sql {
    /// Bind each of `items` as text, comma-separated: the inside of an `IN (...)`.
    pub(crate) fn bind_list<'a>(&mut self, items: impl IntoIterator<Item = &'a str>) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(Param::Text(item.to_string()));
        }
        self
    }
}

/// Names as an SQL list of string literals (`'active', 'paused'`), for the state guards written
/// into fixed statements from the domain's transition tables. The names are ours, never input;
/// quotes are escaped all the same.
pub(crate) fn quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("'{}'", n.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A many-device statement's devices in the statements that name them: on SQLite up to 256 a
/// statement, one parameter each, in [`padded_chunks`] bound [`padded`]; on PostgreSQL all in
/// one statement, bound as one array ([`pg_array`]).
pub(crate) fn device_chunks<T>(backend: Backend, devices: &[T]) -> Vec<&[T]> {
    match backend {
        Backend::Sqlite => {
            padded_chunks(devices, rows_per_statement(backend, 1, 256), STATEMENT_ROWS)
        }
        Backend::Postgres => vec![devices],
    }
}

/// What one more multi-row statement costs the SQLite writer, in items repeated in a padded
/// one (for [`padded_chunks`]): a statement is its start, its temporary b-trees (an `IN`
/// list's index, RETURNING's rows, an INSERT's rows on a table with triggers) and its halt; a
/// repeated item is one more bound value, a key of the list's index or an event row copied,
/// checked and skipped. Under the report-ingest benchmark (docs/BENCHMARKS.md, session 37) the
/// writer's instructions a report were lowest padding every chunk, and higher by more than
/// their run-to-run spread where a statement was taken to cost only 4 rows: so at least ten or
/// so. At 32, every chunk of up to 64 items is padded, as always padding does, and a chunk
/// such as 129 (127 repeats) is split instead.
pub(crate) const STATEMENT_ROWS: usize = 32;

/// A chunk of a multi-row SQLite statement (the SQLite writer's events, up to 256, or a chunk
/// of [`device_chunks`]) as the rows or `IN` list the statement binds: padded to the next power
/// of two by repeating its last item. A device named twice in an `IN` list is the same device,
/// and an event row repeated conflicts with itself and is skipped (`ON CONFLICT DO NOTHING`), so
/// the statement does what it would for the chunk, in one of nine texts (up to 256) prepared
/// once. A chunk split into powers of two instead was up to eight statements, each with the
/// temporary b-trees SQLite opens per execution for its `IN` list, its RETURNING rows and, on a
/// table with triggers, its inserted rows (docs/BENCHMARKS.md).
pub(crate) fn padded<T>(chunk: &[T]) -> impl Iterator<Item = &T> {
    let pad = chunk.len().next_power_of_two() - chunk.len();
    chunk
        .iter()
        .chain(std::iter::repeat_n(chunk.last(), pad).flatten())
}

/// `items` in the chunks of a multi-row SQLite statement, each to be bound [`padded`]: up to
/// `max` a statement; a chunk padded whole where its repeated items cost less than the
/// statements a split into powers of two would add, `statement_rows` repeated items a
/// statement ([`STATEMENT_ROWS`]); otherwise the largest power of two goes first (as
/// [`binary_chunks`]) and the rest is chunked the same way.
pub(crate) fn padded_chunks<T>(items: &[T], max: usize, statement_rows: usize) -> Vec<&[T]> {
    // What binding `n` (under `max`) costs, in repeated rows, and whether to pad it whole.
    fn plan(n: usize, statement_rows: usize) -> (usize, bool) {
        if n == 0 {
            return (0, false);
        }
        let padded = statement_rows + (n.next_power_of_two() - n);
        if n.is_power_of_two() {
            return (padded, true);
        }
        let split = statement_rows + plan(n - n.next_power_of_two() / 2, statement_rows).0;
        if padded <= split {
            (padded, true)
        } else {
            (split, false)
        }
    }
    let mut out = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let n = if rest.len() >= max {
            max
        } else if plan(rest.len(), statement_rows).1 {
            rest.len()
        } else {
            rest.len().next_power_of_two() / 2
        };
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// `items` as one PostgreSQL array literal (`{"a","b",NULL}`), bound as a single text
/// parameter that the statement casts (`$1::text::bigint[]`, see [`pg_array_param`]): sqlx's
/// `Any` driver binds no arrays, and with one array parameter a batch of any size is one
/// statement text, prepared once, and one round trip, where a list of parameters was a statement
/// per power of two of the batch's size. Every element is quoted, `"` and `\` escaped; `None` is
/// NULL. Numbers go in as their text.
pub(crate) fn pg_array<S: AsRef<str>>(items: impl IntoIterator<Item = Option<S>>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            None => out.push_str("NULL"),
            Some(s) => {
                out.push('"');
                for c in s.as_ref().chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

/// Parameter `$n`, bound as text by [`pg_array`], read as an array of `element` (the text
/// parameter cast twice: PostgreSQL then takes the parameter as text, as sqlx sends it).
pub(crate) fn pg_array_param(n: usize, element: &str) -> String {
    format!("${n}::text::{element}[]")
}

#[cfg(test)]
mod tests {
    #[test]
    fn arrays_quote_every_element_and_escape_quotes_and_backslashes() {
        use super::pg_array;
        assert_eq!(pg_array::<&str>([]), "{}");
        assert_eq!(
            pg_array([Some("a"), None, Some("NULL"), Some("x,y}"), Some(r#"q"b\"#)]),
            r#"{"a",NULL,"NULL","x,y}","q\"b\\"}"#
        );
        assert_eq!(
            pg_array([Some(1.to_string()), Some((-2).to_string())]),
            r#"{"1","-2"}"#
        );
        assert_eq!(super::pg_array_param(4, "text"), "$4::text::text[]");
    }

    #[test]
    fn sqlite_statements_stay_under_the_parameter_cap() {
        use super::{rows_per_statement, Backend, SQLITE_MAX_PARAMS};
        assert_eq!(rows_per_statement(Backend::Sqlite, 10, 200), 25);
        assert_eq!(rows_per_statement(Backend::Sqlite, 7, 256), 36);
        assert_eq!(rows_per_statement(Backend::Sqlite, 1, 64), 64);
        assert_eq!(rows_per_statement(Backend::Sqlite, 1000, 64), 1);
        assert_eq!(rows_per_statement(Backend::Postgres, 10, 200), 200);
        assert!(rows_per_statement(Backend::Sqlite, 4, 400) * 4 <= SQLITE_MAX_PARAMS);
    }

    #[test]
    fn lists_are_quoted_and_escaped() {
        assert_eq!(super::quoted(["a", "b"]), "'a', 'b'");
        assert_eq!(super::quoted(["it's"]), "'it''s'");
        let mut sql = super::Sql::default();
        sql.push("x IN (").bind_list(["a", "b"]).push(")");
        assert_eq!(sql.text, "x IN ($1, $2)");
    }

    #[test]
    fn chunks_are_powers_of_two_and_cover_everything() {
        use super::binary_chunks;
        let items: Vec<u32> = (0..300).collect();
        let chunks = binary_chunks(&items, 256);
        let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(lens, [256, 32, 8, 4]);
        assert_eq!(chunks.concat(), items);
        assert_eq!(binary_chunks(&items[..1], 256).len(), 1);
        assert!(binary_chunks::<u32>(&[], 256).is_empty());
    }

    #[test]
    fn sqlite_device_lists_are_padded_to_a_power_of_two_with_the_last_device() {
        use super::{device_chunks, padded, Backend};
        let devices: Vec<u32> = (0..300).collect();
        let chunks = device_chunks(Backend::Sqlite, &devices);
        let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(lens, [256, 44]);
        assert_eq!(chunks.concat(), devices);
        let list: Vec<u32> = padded(chunks[1]).copied().collect();
        assert_eq!(list.len(), 64);
        assert_eq!(list[..44], devices[256..]);
        assert!(list[44..].iter().all(|&d| d == 299));
        assert_eq!(padded(chunks[0]).count(), 256);
        assert_eq!(padded(&[7u32]).collect::<Vec<_>>(), [&7]);
        assert_eq!(padded::<u32>(&[]).count(), 0);
        assert_eq!(device_chunks(Backend::Postgres, &devices).len(), 1);
    }

    #[test]
    fn event_chunks_pad_where_that_costs_less_than_a_statement() {
        use super::padded_chunks;
        let lens = |n: usize, statement_rows: usize| -> Vec<usize> {
            let items: Vec<usize> = (0..n).collect();
            let chunks = padded_chunks(&items, 256, statement_rows);
            assert_eq!(chunks.concat(), items);
            chunks.iter().map(|c| c.len()).collect()
        };
        // A statement worth 8 repeated rows: 3 -> 4 and 24 -> 32 pad (1 and 8 rows, against a
        // second statement); 33 is 32 + 1 (31 rows against one statement); 50 pads to 64 (14
        // rows against 32 + 16 + 2's two more statements); 17 is 16 + 1.
        assert_eq!(lens(3, 8), [3]);
        assert_eq!(lens(24, 8), [24]);
        assert_eq!(lens(33, 8), [32, 1]);
        assert_eq!(lens(50, 8), [50]);
        assert_eq!(lens(17, 8), [16, 1]);
        assert_eq!(lens(64, 8), [64]);
        assert_eq!(lens(300, 8), [256, 32, 12]);
        // Repeated rows as dear as statements: binary chunks; free: one padded statement.
        assert_eq!(lens(50, 0), [32, 16, 2]);
        assert_eq!(lens(33, 1000), [33]);
        assert!(lens(0, 8).is_empty());
    }
}
