//! Which table each message of a routed source goes to: the source's name template filled
//! with the message's field values, renamed, filtered by `when`, else the default table or
//! (unset) the dead-letter table with the reason.

use std::borrow::Cow;
use std::collections::HashMap;

use pipeline_config::{table_name_problem, Routing, TemplatePart};

/// A routed source's routing over the run's route indexes.
#[derive(Debug, Clone)]
pub struct Router {
    routing: Routing,
    /// Routed table name → route index (looked up once per message: a fast hash; the map only
    /// ever holds configured or created tables, never names taken from messages).
    /// (Keyed by bytes: a name made of a message's plain field values is looked up as is.)
    by_name: HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>,
    /// The fields a message is routed by (the `when` ones and the template's), each once:
    /// the caller picks their values from the message (see [`Router::fields`]).
    fields: Vec<Vec<String>>,
    /// Where the value of each `when` field sits among `fields`, in order.
    when_at: Vec<usize>,
    /// Likewise for each field of the name template, in order.
    template_at: Vec<usize>,
}

/// Per-chunk scratch space of [`Router::place`], reused across its messages.
#[derive(Debug, Default)]
pub struct PlaceScratch {
    name: String,
    plain_name: Vec<u8>,
}

/// Where one message of a routed source goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// To the route with this index.
    Route(usize),
    /// To the table of this name, to be inferred (`infer = true`, no schema file, no route
    /// yet): the message is placed once the route exists.
    New(String),
    /// Nowhere (no default set), for this reason.
    Nowhere(String),
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
        let template: Vec<&Vec<String>> = routing
            .template
            .parts
            .iter()
            .filter_map(|p| match p {
                TemplatePart::Field(path) => Some(path),
                TemplatePart::Text(_) => None,
            })
            .collect();
        let when: Vec<&Vec<String>> = routing.when.iter().map(|(path, _)| path).collect();
        let mut fields: Vec<Vec<String>> = when.iter().chain(&template).filter(|p| !p.is_empty()).map(|p| p.to_vec()).collect();
        fields.sort();
        fields.dedup();
        let at = |path: &Vec<String>| fields.iter().position(|f| f == path).unwrap_or(usize::MAX);
        let (when_at, template_at) = (when.iter().map(|p| at(p)).collect(), template.iter().map(|p| at(p)).collect());
        let by_name = by_name.into_iter().map(|(name, idx)| (name.into_bytes().into_boxed_slice(), idx)).collect();
        Self { by_name, fields, when_at, template_at, routing }
    }

    /// The fields messages are routed by: [`Router::place`] takes their values in this order.
    pub fn fields(&self) -> &[Vec<String>] {
        &self.fields
    }

    /// Where tables without a schema file are created (`infer = true`).
    pub fn inferred(&self) -> Option<&pipeline_config::InferredTables> {
        self.routing.inferred.as_ref()
    }

    /// Whether messages of table `name` have a route.
    pub fn knows(&self, name: &str) -> bool {
        self.by_name.contains_key(name.as_bytes())
    }

    /// Routes messages of table `name` (an inferred table) to route `idx` from now on.
    pub fn add_table(&mut self, name: &str, idx: usize) {
        self.by_name.insert(name.as_bytes().into(), idx);
    }

    /// Where a message goes: its table's route, else the default table's, else nowhere with
    /// the reason; `values` are the raw values of its [`Router::fields`].
    pub fn place(&self, values: &[Option<&[u8]>], scratch: &mut PlaceScratch) -> Placement {
        match self.route(values, scratch) {
            Ok(idx) => Placement::Route(idx),
            Err(Miss::New(table)) => Placement::New(table),
            Err(Miss::Nowhere(reason)) => match &self.routing.default {
                Some(d) => match self.by_name.get(d.as_bytes()) {
                    Some(&idx) => Placement::Route(idx),
                    None if self.routing.inferred.is_some() => Placement::New(d.clone()),
                    None => Placement::Nowhere(reason),
                },
                None => Placement::Nowhere(reason),
            },
        }
    }

    /// The route index of one message, or why it has none.
    fn route(&self, values: &[Option<&[u8]>], scratch: &mut PlaceScratch) -> Result<usize, Miss> {
        match self.route_plain(values, &mut scratch.plain_name) {
            Some(idx) => Ok(idx),
            None => self.route_by_text(values, &mut scratch.name),
        }
    }

    /// [`Router::route`] for any message: its fields' values as text, with the reason when it
    /// has no route.
    fn route_by_text(&self, values: &[Option<&[u8]>], name: &mut String) -> Result<usize, Miss> {
        let value = |at: usize, path: &[String]| field_text(values.get(at).copied().flatten(), path);
        for (&at, (path, wanted)) in self.when_at.iter().zip(&self.routing.when) {
            let found = value(at, path).map_err(Miss::Nowhere)?;
            if found != wanted.as_str() {
                return Err(Miss::Nowhere(format!("not routed: {} is '{found}', routing wants '{wanted}'", path.join("."))));
            }
        }
        name.clear();
        let mut fields = self.template_at.iter();
        for part in &self.routing.template.parts {
            match part {
                TemplatePart::Text(t) => name.push_str(t),
                TemplatePart::Field(path) => {
                    let at = fields.next().copied().unwrap_or(usize::MAX);
                    name.push_str(&value(at, path).map_err(Miss::Nowhere)?);
                }
            }
        }
        let renamed = self.routing.rename.get(name.as_str()).map_or(name.as_str(), String::as_str);
        if let Some(&idx) = self.by_name.get(renamed.as_bytes()) {
            return Ok(idx);
        }
        match (table_name_problem(renamed), &self.routing.inferred) {
            (Some(problem), _) => Err(Miss::Nowhere(problem)),
            (None, Some(_)) => Err(Miss::New(renamed.to_string())),
            (None, None) => Err(Miss::Nowhere(format!("no schema file {renamed}.schema.toml for routed table '{renamed}'"))),
        }
    }

    /// The route of a message whose routing fields are plain strings that pass the `when`
    /// filters and, without a rename, name a known table byte for byte (the usual message:
    /// no text conversion, no reason built). None: [`Router::route`] decides the long way.
    fn route_plain(&self, values: &[Option<&[u8]>], name: &mut Vec<u8>) -> Option<usize> {
        if !self.routing.rename.is_empty() {
            return None;
        }
        let value = |at: &usize| plain_string(values.get(*at).copied().flatten());
        for (at, (_, wanted)) in self.when_at.iter().zip(&self.routing.when) {
            if value(at)? != wanted.as_bytes() {
                return None;
            }
        }
        name.clear();
        let mut fields = self.template_at.iter();
        for part in &self.routing.template.parts {
            match part {
                TemplatePart::Text(t) => name.extend_from_slice(t.as_bytes()),
                TemplatePart::Field(_) => name.extend_from_slice(value(fields.next()?)?),
            }
        }
        self.by_name.get(name.as_slice()).copied()
    }
}

/// The value of a plain string (ASCII, no escapes) without its quotes: its text exactly.
fn plain_string(raw: Option<&[u8]>) -> Option<&[u8]> {
    match raw? {
        [b'"', inner @ .., b'"'] if inner.is_ascii() && !inner.contains(&b'\\') => Some(inner),
        _ => None,
    }
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
    use json_arrow::{FieldPicker, Picked};
    use pipeline_config::NameTemplate;
    use std::collections::BTreeMap;

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

    /// Where each of `MESSAGES[indexes]` goes, its routing fields picked alone.
    fn places(r: &Router, indexes: &[usize]) -> Vec<Placement> {
        let (picker, mut picked) = (FieldPicker::new(r.fields()), Picked::default());
        let mut place = |message| {
            picker.pick(message, &mut picked);
            r.place(picked.values(), &mut PlaceScratch::default())
        };
        indexes.iter().map(|&i| place(MESSAGES[i])).collect()
    }

    fn nowhere(reason: &str) -> Placement {
        Placement::Nowhere(reason.to_string())
    }

    #[test]
    fn messages_are_placed_by_template_rename_and_schema_with_reasons_for_the_rest() {
        use Placement::Route;
        assert_eq!(
            places(&router(None, &[]), &[0, 1, 2, 3, 4, 5]),
            vec![
                Route(0),
                Route(1),
                nowhere("no schema file public_unknown.schema.toml for routed table 'public_unknown'"),
                nowhere("routing field metadata.table-name is missing or null"),
                nowhere("routed table name '.._x/y' has '.': only letters, digits, '_' and '-' may name a table"),
                Route(0),
            ]
        );
    }

    #[test]
    fn fields_picked_after_others_in_the_same_pass_place_alike() {
        let r = router(None, &[("metadata.schema-name", "public")]);
        assert_eq!(r.fields(), [["metadata", "schema-name"], ["metadata", "table-name"]], "each field once");
        let others = [vec!["data".to_string()], vec!["metadata".to_string(), "record-type".to_string()]];
        let picker = FieldPicker::new(others.iter().chain(r.fields()));
        let mut picked = Picked::default();
        for (i, message) in MESSAGES.iter().enumerate() {
            picker.pick(message, &mut picked);
            assert_eq!(r.place(&picked.values()[others.len()..], &mut PlaceScratch::default()), places(&r, &[i]).remove(0));
        }
    }

    #[test]
    fn names_of_plain_values_are_looked_up_as_bytes_with_the_routes_text_gives() {
        let mut r = router(None, &[("metadata.schema-name", "public")]);
        r.routing.rename.clear();
        r.add_table("public_caf\u{e9}", 3);
        let messages: [&[u8]; 7] = [
            br#"{"metadata": {"schema-name": "public", "table-name": "orders"}}"#,
            br#"{"metadata": {"schema-name": "pub\u006cic", "table-name": "orders"}}"#,
            br#"{"metadata": {"schema-name": "public", "table-name": "caf\u00e9"}}"#,
            "{\"metadata\": {\"schema-name\": \"public\", \"table-name\": \"caf\u{e9}\"}}".as_bytes(),
            br#"{"metadata": {"schema-name": "hr", "table-name": "orders"}}"#,
            br#"{"metadata": {"schema-name": "public", "table-name": "nothing"}}"#,
            br#"{"metadata": {"schema-name": "public", "table-name": 7}}"#,
        ];
        let (picker, mut picked) = (FieldPicker::new(r.fields()), Picked::default());
        let mut plain = Vec::new();
        for message in messages {
            picker.pick(message, &mut picked);
            let by_text = r.route_by_text(picked.values(), &mut String::new()).ok();
            if let Some(idx) = r.route_plain(picked.values(), &mut Vec::new()) {
                assert_eq!(Some(idx), by_text, "{}", String::from_utf8_lossy(message));
                plain.push(idx);
            }
        }
        assert_eq!(plain, [0], "escaped, non-ASCII, filtered, unknown and numeric values take the long way");
        assert_eq!(places(&r, &[5]), vec![Placement::Route(0)], "escapes still route");
    }

    #[test]
    fn a_default_table_takes_what_routes_nowhere_and_when_filters() {
        use Placement::Route;
        let r = router(Some("other"), &[("metadata.schema-name", "public")]);
        assert_eq!(places(&r, &[0, 1, 2, 3]), vec![Route(0), Route(2), Route(2), Route(2)]);
        let r = router(None, &[("metadata.schema-name", "public")]);
        assert_eq!(places(&r, &[1]), vec![nowhere("not routed: metadata.schema-name is 'hr', routing wants 'public'")]);
    }

    #[test]
    fn with_inference_a_name_without_a_schema_is_a_new_table_and_bad_names_still_have_reasons() {
        use Placement::{New, Nowhere, Route};
        let mut r = router(None, &[]);
        r.routing.inferred = Some(inferred_tables());
        let placed = places(&r, &[0, 1, 2, 3, 4]);
        assert_eq!(placed[..3], [Route(0), Route(1), New("public_unknown".to_string())]);
        assert!(matches!(placed[3..], [Nowhere(_), Nowhere(_)]), "{placed:?}");
        r.add_table("public_unknown", 7);
        assert_eq!(places(&r, &[2]), vec![Route(7)]);
        r.routing.default = Some("catch_all".to_string());
        assert_eq!(places(&r, &[3]), vec![New("catch_all".to_string())], "an inferred default table is created too");
    }

    fn inferred_tables() -> pipeline_config::InferredTables {
        let lake = pipeline_config::LakeConfig { root: "lake".into(), storage_options: BTreeMap::new(), store: Default::default() };
        pipeline_config::InferredTables { path: "raw/{table}".into(), partitions: Vec::new(), properties: BTreeMap::new(), lake }
    }
}
