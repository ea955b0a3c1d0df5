//! Which table each message of a routed source goes to: the source's name template filled
//! with the message's field values, renamed, filtered by `when`, else the default table or
//! (unset) the dead-letter table with the reason.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use json_arrow::{raw_value, Reject};
use pipeline_config::{table_name_problem, Routing, TemplatePart};

/// A routed source's routing over the run's route indexes.
#[derive(Debug, Clone)]
pub struct Router {
    routing: Routing,
    /// Routed table name → route index.
    by_name: HashMap<String, usize>,
    /// The field paths a message is routed by: the `when` ones, then the template's, sorted by
    /// parent so a shared parent object (DMS `metadata`) is found once per message.
    fields: Vec<Vec<String>>,
}

/// A chunk's messages split by table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Route index → indexes of its messages, in chunk order.
    pub groups: BTreeMap<usize, Vec<u32>>,
    /// Messages routed to no table (no default set): index and reason.
    pub unrouted: Vec<Reject>,
    /// Names of tables to infer (`infer = true`, no schema file, no route yet): their messages
    /// are placed once the routes exist.
    pub new_tables: BTreeSet<String>,
}

/// Why a message has no route yet.
enum Miss {
    /// It routes nowhere, for this reason.
    Nowhere(String),
    /// Its table is to be inferred.
    New(String),
}

impl Router {
    /// A router for `routing` whose tables have the route indexes `by_name`.
    pub fn new(routing: Routing, by_name: HashMap<String, usize>) -> Self {
        let template = routing.template.parts.iter().filter_map(|p| match p {
            TemplatePart::Field(path) => Some(path.clone()),
            TemplatePart::Text(_) => None,
        });
        let mut fields: Vec<Vec<String>> = routing.when.iter().map(|(path, _)| path.clone()).chain(template).collect();
        fields.sort_by(|a, b| a[..a.len() - 1].cmp(&b[..b.len() - 1]));
        fields.dedup();
        Self { routing, by_name, fields }
    }

    /// Where tables without a schema file are created (`infer = true`).
    pub fn inferred(&self) -> Option<&pipeline_config::InferredTables> {
        self.routing.inferred.as_ref()
    }

    /// Whether messages of table `name` have a route.
    pub fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Routes messages of table `name` (an inferred table) to route `idx` from now on.
    pub fn add_table(&mut self, name: &str, idx: usize) {
        self.by_name.insert(name.to_string(), idx);
    }

    /// Splits the messages `kept` (indexes into `payloads`) by table.
    pub fn split(&self, payloads: &[&[u8]], kept: &[u32]) -> Split {
        let mut split = Split::default();
        let default = self.routing.default.as_ref().map(|d| (d, self.by_name.get(d)));
        let mut name = String::new();
        for &i in kept {
            match (self.route(payloads[i as usize], &mut name), default) {
                (Ok(idx), _) | (Err(Miss::Nowhere(_)), Some((_, Some(&idx)))) => split.groups.entry(idx).or_default().push(i),
                (Err(Miss::New(table)), _) => {
                    split.new_tables.insert(table);
                }
                (Err(Miss::Nowhere(_)), Some((d, None))) if self.routing.inferred.is_some() => {
                    split.new_tables.insert(d.clone());
                }
                (Err(Miss::Nowhere(reason)), _) => split.unrouted.push(Reject { index: i as usize, reason }),
            }
        }
        split
    }

    /// The route index of one message, or why it has none; `name` is scratch space.
    fn route(&self, payload: &[u8], name: &mut String) -> Result<usize, Miss> {
        let values = field_values(payload, &self.fields);
        let value = |path: &Vec<String>| -> Result<Cow<'_, str>, String> {
            let at = self.fields.iter().position(|f| f == path).unwrap_or(usize::MAX);
            field_text(values.get(at).copied().flatten(), path)
        };
        for (path, wanted) in &self.routing.when {
            let found = value(path).map_err(Miss::Nowhere)?;
            if found != wanted.as_str() {
                return Err(Miss::Nowhere(format!("not routed: {} is '{found}', routing wants '{wanted}'", path.join("."))));
            }
        }
        name.clear();
        for part in &self.routing.template.parts {
            match part {
                TemplatePart::Text(t) => name.push_str(t),
                TemplatePart::Field(path) => name.push_str(&value(path).map_err(Miss::Nowhere)?),
            }
        }
        let renamed = self.routing.rename.get(name.as_str()).map_or(name.as_str(), String::as_str);
        if let Some(&idx) = self.by_name.get(renamed) {
            return Ok(idx);
        }
        match (table_name_problem(renamed), &self.routing.inferred) {
            (Some(problem), _) => Err(Miss::Nowhere(problem)),
            (None, Some(_)) => Err(Miss::New(renamed.to_string())),
            (None, None) => Err(Miss::Nowhere(format!("no schema file {renamed}.schema.toml for routed table '{renamed}'"))),
        }
    }
}

/// The raw JSON value of each of `fields` (sorted by parent path) in `payload`; a parent object
/// shared by neighbours is looked up once.
fn field_values<'a>(payload: &'a [u8], fields: &[Vec<String>]) -> Vec<Option<&'a [u8]>> {
    let mut parent: Option<(&[String], Option<&'a [u8]>)> = None;
    let mut values = Vec::with_capacity(fields.len());
    for path in fields {
        let Some((last, head)) = path.split_last() else {
            values.push(None);
            continue;
        };
        let object = match parent {
            _ if head.is_empty() => Some(payload),
            Some((p, object)) if p == head => object,
            _ => {
                let object = raw_value(payload, head);
                parent = Some((head, object));
                object
            }
        };
        values.push(object.and_then(|o| raw_value(o, std::slice::from_ref(last))));
    }
    values
}

/// A scalar field's value as text (strings unescaped, numbers and booleans as written).
fn field_text<'a>(raw: Option<&'a [u8]>, path: &[String]) -> Result<Cow<'a, str>, String> {
    let missing = || format!("routing field {} is missing or null", path.join("."));
    let raw = raw.ok_or_else(missing)?;
    let text = |bytes: &'a [u8]| std::str::from_utf8(bytes).map_err(|_| format!("routing field {} is not UTF-8", path.join(".")));
    match raw {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => Ok(Cow::Borrowed(text(inner)?)),
        [b'"', ..] => serde_json::from_slice::<String>(raw).map(Cow::Owned).map_err(|e| format!("routing field {}: {e}", path.join("."))),
        [b'{' | b'[', ..] => Err(format!("routing field {} is not a string or number", path.join("."))),
        [] | [b'n', ..] => Err(missing()),
        _ => Ok(Cow::Borrowed(text(raw)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_config::NameTemplate;

    fn router(default: Option<&str>, when: &[(&str, &str)]) -> Router {
        let routing = Routing {
            template: NameTemplate::parse("k", pipeline_config::DMS_TABLE_TEMPLATE).unwrap(),
            rename: BTreeMap::from([("hr_staff".to_string(), "employees".to_string())]),
            when: when.iter().map(|(p, v)| (p.split('.').map(str::to_string).collect(), v.to_string())).collect(),
            default: default.map(str::to_string),
            tables: BTreeMap::new(),
            inferred: None,
        };
        let names = [("public_orders", 0), ("employees", 1), ("other", 2)];
        Router::new(routing, names.iter().map(|(n, i)| (n.to_string(), *i)).collect())
    }

    const MESSAGES: [&[u8]; 6] = [
        br#"{"metadata": {"schema-name": "public", "table-name": "orders"}}"#,
        br#"{"metadata": {"schema-name": "hr", "table-name": "staff"}}"#,
        br#"{"metadata": {"schema-name": "public", "table-name": "unknown"}}"#,
        br#"{"metadata": {"schema-name": "public"}}"#,
        br#"{"metadata": {"schema-name": "..", "table-name": "x/y"}}"#,
        br#"{"metadata": {"schema-name": "pub\u006cic", "table-name": "orders"}}"#,
    ];

    #[test]
    fn messages_split_by_template_rename_and_schema_with_reasons_for_the_rest() {
        let split = router(None, &[]).split(&MESSAGES, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(split.groups, BTreeMap::from([(0, vec![0, 5]), (1, vec![1])]));
        let reasons: Vec<(usize, &str)> = split.unrouted.iter().map(|r| (r.index, r.reason.as_str())).collect();
        assert_eq!(
            reasons,
            vec![
                (2, "no schema file public_unknown.schema.toml for routed table 'public_unknown'"),
                (3, "routing field metadata.table-name is missing or null"),
                (4, "routed table name '.._x/y' has '.': only letters, digits, '_' and '-' may name a table"),
            ]
        );
    }

    #[test]
    fn a_default_table_takes_what_routes_nowhere_and_when_filters() {
        let split = router(Some("other"), &[("metadata.schema-name", "public")]).split(&MESSAGES, &[0, 1, 2, 3]);
        assert_eq!(split.groups, BTreeMap::from([(0, vec![0]), (2, vec![1, 2, 3])]));
        assert!(split.unrouted.is_empty());
        let split = router(None, &[("metadata.schema-name", "public")]).split(&MESSAGES, &[1]);
        assert_eq!(split.unrouted[0].reason, "not routed: metadata.schema-name is 'hr', routing wants 'public'");
    }

    #[test]
    fn with_inference_a_name_without_a_schema_is_a_new_table_and_bad_names_still_have_reasons() {
        let mut r = router(None, &[]);
        r.routing.inferred = Some(inferred_tables());
        let split = r.split(&MESSAGES, &[0, 1, 2, 3, 4]);
        assert_eq!(split.groups, BTreeMap::from([(0, vec![0]), (1, vec![1])]));
        assert_eq!(split.new_tables, BTreeSet::from(["public_unknown".to_string()]));
        assert_eq!(split.unrouted.iter().map(|r| r.index).collect::<Vec<_>>(), vec![3, 4]);
        r.add_table("public_unknown", 7);
        let split = r.split(&MESSAGES, &[2]);
        assert_eq!(split.groups, BTreeMap::from([(7, vec![2])]));
        assert!(split.new_tables.is_empty());
    }

    fn inferred_tables() -> pipeline_config::InferredTables {
        let lake = pipeline_config::LakeConfig { root: "lake".into(), storage_options: BTreeMap::new(), store: Default::default() };
        pipeline_config::InferredTables { path: "raw/{table}".into(), partitions: Vec::new(), properties: BTreeMap::new(), lake }
    }
}
