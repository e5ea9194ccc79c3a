//! Building SQL with `$n` placeholders (the form both backends accept) and binding in order.
//! sqlx's `QueryBuilder` for the `Any` driver writes `?`, which PostgreSQL rejects.

/// Rows per multi-row statement: well under SQLite's parameter limit.
pub(crate) const BATCH: usize = 400;

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
            q = match p {
                Param::Int(i) => q.bind(*i),
                Param::Text(s) => q.bind(s.as_str()),
                Param::Bytes(b) => q.bind(b.clone()),
                Param::OptInt(i) => q.bind(*i),
                Param::OptText(s) => q.bind(s.clone()),
            };
        }
        q
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

#[cfg(test)]
mod tests {
    #[test]
    fn lists_are_quoted_and_escaped() {
        assert_eq!(super::quoted(["a", "b"]), "'a', 'b'");
        assert_eq!(super::quoted(["it's"]), "'it''s'");
        let mut sql = super::Sql::default();
        sql.push("x IN (").bind_list(["a", "b"]).push(")");
        assert_eq!(sql.text, "x IN ($1, $2)");
    }
}
