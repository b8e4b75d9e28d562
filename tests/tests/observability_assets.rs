//! The Grafana dashboard and the Prometheus alert rules in `deploy/observability` query only
//! metrics and labels tessera really exports, use every metric family, and alert on lag, dead
//! letters, restarts and stalls.
//!
//! Every PromQL expression (panel targets, rows' nested panels, templating queries, rule
//! expressions) is parsed with `promql-parser` and its AST walked: each selected series must be
//! one the metrics registry exposes, each label in a matcher, a `by`/`without`/`on`/`ignoring`/
//! `group_*` clause, a legend or an annotation template must exist where it is used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, LabelModifier, VectorMatchCardinality, VectorSelector};
use serde::Deserialize;
use serde_json::Value;
use tessera_actors::observe::metrics::{Metrics, names};

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Prometheus built-in series the assets may query (`TesseraDown` uses `up`).
const BUILT_INS: [&str; 1] = ["up"];

/// What a dashboard variable expands to when the expression is parsed: intervals become
/// durations, query variables a sentinel that shows where the value lands.
const VARIABLE_SENTINEL: &str = "tessera_var_";

/// Alerts the rules must define, with the metric families each must query.
const REQUIRED_ALERTS: [(&str, &[&str]); 8] = [
    ("TesseraConsumerLagGrowing", &[names::CONSUMER_LAG]),
    (
        "TesseraDeadLetterRateHigh",
        &[names::FRAMES_DEAD_LETTERED, names::FRAMES_CONSUMED],
    ),
    ("TesseraRestartStorm", &[names::ACTOR_RESTARTS]),
    (
        "TesseraKafkaDeliveryFailing",
        &[
            names::DELIVERY_FAILURES,
            names::PRODUCERS_REPLACED,
            names::COMMIT_FAILURES,
        ],
    ),
    (
        "TesseraNoProgress",
        &[
            names::FRAMES_IN_FLIGHT,
            names::CONSUMER_LAG,
            names::FRAMES_PUBLISHED,
            names::FRAMES_SKIPPED,
            names::FRAMES_DEAD_LETTERED,
        ],
    ),
    ("TesseraOperatorPaused", &[names::OPERATOR_PAUSED]),
    (
        "TesseraIdleReplicaWhileLagging",
        &[names::IDLE_MEMBER, names::CONSUMER_LAG],
    ),
    ("TesseraDown", &["up"]),
];

const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/observability")
        .join(name)
}

fn read_asset(name: &str) -> Result<String> {
    let path = asset(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

// ------------------------------------------------------------------------------------------
// What tessera exports
// ------------------------------------------------------------------------------------------

/// One series name as Prometheus stores it (a histogram family gives three).
#[derive(Debug, Clone)]
struct Series {
    family: String,
    /// Label names of the series, target labels excluded.
    labels: BTreeSet<String>,
    /// A counter (or a histogram's `_bucket`/`_sum`/`_count`): `rate` applies.
    counter: bool,
}

/// Every series name a scrape of tessera (and Prometheus itself) yields.
#[derive(Debug)]
struct Catalog {
    series: BTreeMap<String, Series>,
}

impl Catalog {
    fn from_registry() -> Self {
        let metrics = Metrics::new();
        // Series of these label sets exist only once set.
        metrics.set_consumer_lag("frames", 0, 1);
        metrics.set_model("m", "1", "base", "cpu");
        let mut series = BTreeMap::new();
        for family in metrics.gather() {
            let name = family.name().to_owned();
            let labels: BTreeSet<String> = family
                .get_metric()
                .iter()
                .flat_map(|m| m.get_label().iter().map(|l| l.name().to_owned()))
                .collect();
            let entry = |suffix: &str, extra: Option<&str>, counter: bool| {
                let mut labels = labels.clone();
                labels.extend(extra.map(str::to_owned));
                (
                    format!("{name}{suffix}"),
                    Series {
                        family: name.clone(),
                        labels,
                        counter,
                    },
                )
            };
            // MetricType is not nameable from here (no direct prometheus dependency).
            match format!("{:?}", family.get_field_type()).as_str() {
                "HISTOGRAM" => series.extend([
                    entry("_bucket", Some("le"), true),
                    entry("_sum", None, true),
                    entry("_count", None, true),
                ]),
                "SUMMARY" => series.extend([
                    entry("", Some("quantile"), false),
                    entry("_sum", None, true),
                    entry("_count", None, true),
                ]),
                "COUNTER" => series.extend([entry("", None, true)]),
                _ => series.extend([entry("", None, false)]),
            }
        }
        for name in BUILT_INS {
            series.insert(
                name.to_owned(),
                Series {
                    family: name.to_owned(),
                    labels: BTreeSet::new(),
                    counter: false,
                },
            );
        }
        Self { series }
    }
}

// ------------------------------------------------------------------------------------------
// PromQL analysis
// ------------------------------------------------------------------------------------------

/// What the expressions analysed so far select, and what is wrong with them.
#[derive(Debug, Default)]
struct Analysis {
    /// Metric families selected (a histogram's three series count as its family).
    families: BTreeSet<String>,
    problems: Vec<String>,
}

impl Analysis {
    /// Parses `promql` (already free of dashboard variables) and checks it; returns the
    /// parsed expression and the labels its result may carry.
    fn check(
        &mut self,
        catalog: &Catalog,
        location: &str,
        promql: &str,
    ) -> Option<(Expr, BTreeSet<String>)> {
        match promql_parser::parser::parse(promql) {
            Ok(expr) => {
                let mut walk = Walk {
                    catalog,
                    location,
                    analysis: self,
                };
                let labels = walk.expr(&expr);
                Some((expr, labels))
            }
            Err(error) => {
                self.problems
                    .push(format!("{location}: `{promql}` does not parse: {error}"));
                None
            }
        }
    }
}

/// The metric families `expr` selects.
fn families_of(catalog: &Catalog, expr: &Expr) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    selected_names(expr, &mut names);
    names
        .iter()
        .filter_map(|n| catalog.series.get(n).map(|s| s.family.clone()))
        .collect()
}

struct Walk<'a> {
    catalog: &'a Catalog,
    location: &'a str,
    analysis: &'a mut Analysis,
}

impl Walk<'_> {
    fn problem(&mut self, text: String) {
        self.analysis
            .problems
            .push(format!("{}: {text}", self.location));
    }

    /// Checks `expr` and returns the labels its result may carry (an upper bound).
    fn expr(&mut self, expr: &Expr) -> BTreeSet<String> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => BTreeSet::new(),
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::Unary(u) => self.expr(&u.expr),
            Expr::Subquery(s) => self.expr(&s.expr),
            Expr::Aggregate(agg) => {
                if let Some(param) = &agg.param {
                    self.expr(param);
                }
                let input = self.expr(&agg.expr);
                match &agg.modifier {
                    Some(LabelModifier::Include(by)) => {
                        self.known_labels("by", &by.labels, &input);
                        by.labels.iter().cloned().collect()
                    }
                    Some(LabelModifier::Exclude(without)) => {
                        self.known_labels("without", &without.labels, &input);
                        input
                            .difference(&without.labels.iter().cloned().collect())
                            .cloned()
                            .collect()
                    }
                    None => BTreeSet::new(),
                }
            }
            Expr::Binary(bin) => {
                let lhs = self.expr(&bin.lhs);
                let rhs = self.expr(&bin.rhs);
                if bin.lhs.value_type() == ValueType::Scalar {
                    return rhs;
                }
                if bin.rhs.value_type() == ValueType::Scalar {
                    return lhs;
                }
                let mut result = if bin.op.to_string() == "or" {
                    lhs.union(&rhs).cloned().collect()
                } else {
                    lhs.clone()
                };
                if let Some(modifier) = &bin.modifier {
                    match &modifier.matching {
                        Some(LabelModifier::Include(on)) => {
                            let both = lhs.intersection(&rhs).cloned().collect();
                            self.known_labels("on", &on.labels, &both);
                        }
                        Some(LabelModifier::Exclude(ignoring)) => {
                            let either = lhs.union(&rhs).cloned().collect();
                            self.known_labels("ignoring", &ignoring.labels, &either);
                        }
                        None => {}
                    }
                    match &modifier.card {
                        VectorMatchCardinality::ManyToOne(extra) => {
                            self.known_labels("group_left", &extra.labels, &rhs);
                            result.extend(extra.labels.iter().cloned());
                        }
                        VectorMatchCardinality::OneToMany(extra) => {
                            self.known_labels("group_right", &extra.labels, &lhs);
                            result = rhs.clone();
                            result.extend(extra.labels.iter().cloned());
                        }
                        VectorMatchCardinality::OneToOne | VectorMatchCardinality::ManyToMany => {}
                    }
                }
                result
            }
            Expr::Call(call) => {
                let name = call.func.name;
                let args: Vec<BTreeSet<String>> =
                    call.args.args.iter().map(|a| self.expr(a)).collect();
                if matches!(name, "rate" | "irate" | "increase" | "resets") {
                    let mut selected = BTreeSet::new();
                    for arg in &call.args.args {
                        selected_names(arg, &mut selected);
                    }
                    for series in selected {
                        // Unknown names are reported by `selector`.
                        let gauge = self.catalog.series.get(&series).is_some_and(|s| !s.counter);
                        if gauge {
                            self.problem(format!("{name}() over `{series}`, not a counter"));
                        }
                    }
                }
                let mut result: BTreeSet<String> = args.iter().flatten().cloned().collect();
                match name {
                    "histogram_quantile" => {
                        if !args.get(1).is_some_and(|a| a.contains("le")) {
                            self.problem(
                                "histogram_quantile() over series without `le` (aggregate `by (le, ...)`)"
                                    .to_owned(),
                            );
                        }
                        result.remove("le");
                    }
                    "label_replace" | "label_join" => {
                        if let Some(Expr::StringLiteral(dst)) = call.args.args.get(1).map(|a| &**a)
                        {
                            result.insert(dst.val.clone());
                        }
                    }
                    "vector" | "time" | "scalar" => result.clear(),
                    _ => {}
                }
                result
            }
            Expr::Extension(_) => {
                self.problem("unexpected extension node".to_owned());
                BTreeSet::new()
            }
        }
    }

    fn known_labels(&mut self, clause: &str, used: &[String], available: &BTreeSet<String>) {
        for label in used {
            if !available.contains(label) {
                self.problem(format!(
                    "`{clause} ({label})`: no series there has label `{label}` (has {available:?})"
                ));
            }
        }
    }

    fn selector(&mut self, vs: &VectorSelector) -> BTreeSet<String> {
        let matchers: Vec<&Matcher> = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten())
            .collect();
        let name = vs.name.clone().or_else(|| {
            matchers
                .iter()
                .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
                .map(|m| m.value.clone())
        });
        let Some(name) = name else {
            self.problem(format!("selector `{vs}` names no metric"));
            return BTreeSet::new();
        };
        let Some(series) = self.catalog.series.get(&name) else {
            self.problem(format!("`{name}` is not a metric tessera exports"));
            return target_labels();
        };
        self.analysis.families.insert(series.family.clone());
        let mut labels = series.labels.clone();
        labels.extend(target_labels());
        for matcher in matchers {
            if matcher.name == "__name__" {
                if matcher.op != MatchOp::Equal {
                    self.problem(format!("`{vs}`: __name__ must be matched exactly"));
                }
                continue;
            }
            if !labels.contains(&matcher.name) {
                self.problem(format!(
                    "`{vs}`: `{name}` has no label `{}` (has {labels:?})",
                    matcher.name
                ));
            }
            let regex = matches!(matcher.op, MatchOp::Re(_) | MatchOp::NotRe(_));
            if matcher.value.contains(VARIABLE_SENTINEL) && !regex {
                self.problem(format!(
                    "`{vs}`: a multi-value variable needs `=~`, not `=`/`!=`, in `{}`",
                    matcher.name
                ));
            }
        }
        labels
    }
}

fn target_labels() -> BTreeSet<String> {
    TARGET_LABELS.iter().map(|l| (*l).to_owned()).collect()
}

/// The series names `expr` selects (by name or `__name__="..."`).
fn selected_names(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::VectorSelector(vs) => out.extend(selector_name(vs)),
        Expr::MatrixSelector(ms) => out.extend(selector_name(&ms.vs)),
        Expr::Paren(p) => selected_names(&p.expr, out),
        Expr::Unary(u) => selected_names(&u.expr, out),
        Expr::Subquery(s) => selected_names(&s.expr, out),
        Expr::Aggregate(a) => {
            selected_names(&a.expr, out);
            if let Some(param) = &a.param {
                selected_names(param, out);
            }
        }
        Expr::Binary(b) => {
            selected_names(&b.lhs, out);
            selected_names(&b.rhs, out);
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| selected_names(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector_name(vs: &VectorSelector) -> Option<String> {
    vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.clone())
    })
}

/// Replaces Grafana variables (`$x`, `${x}`, `${x:format}`, `[[x]]`) by values that parse:
/// interval variables by durations, the dashboard's own variables by a sentinel.
fn expand_variables(text: &str, dashboard_variables: &BTreeSet<String>) -> Result<String> {
    ensure!(
        !text.contains("[["),
        "deprecated [[variable]] syntax in `{text}`"
    );
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .with_context(|| format!("unclosed ${{ in `{text}`"))?;
            let inner = &braced[..end];
            (inner.split(':').next().unwrap_or(inner), end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = match name {
            "__rate_interval" => "5m".to_owned(),
            "__interval" => "1m".to_owned(),
            "__range" => "1h".to_owned(),
            _ if dashboard_variables.contains(name) => format!("{VARIABLE_SENTINEL}{name}"),
            _ => bail!("unknown variable `${name}` in `{text}`"),
        };
        out.push_str(&value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `{{label}}` names in a Grafana legend or `$labels.label` in a rule annotation.
fn template_labels(text: &str, prefix: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let after = after.trim_start();
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if end > 0 {
            labels.push(after[..end].to_owned());
        }
        rest = &after[end..];
    }
    labels
}

// ------------------------------------------------------------------------------------------
// The dashboard
// ------------------------------------------------------------------------------------------

/// A PromQL query of the dashboard, where it is, and its legend.
#[derive(Debug)]
struct DashboardQuery {
    location: String,
    expr: String,
    legend: Option<String>,
}

fn datasource_uid(value: &Value) -> Option<&str> {
    value.get("datasource")?.get("uid")?.as_str()
}

/// Collects the targets of `panels`, recursing into rows; checks each panel's basics.
fn collect_panels(
    panels: &[Value],
    queries: &mut Vec<DashboardQuery>,
    ids: &mut BTreeSet<u64>,
) -> Result<()> {
    for panel in panels {
        let title = panel["title"].as_str().context("panel without a title")?;
        let id = panel["id"]
            .as_u64()
            .with_context(|| format!("panel `{title}` has no id"))?;
        ensure!(ids.insert(id), "panel id {id} (`{title}`) is not unique");
        ensure!(
            panel["gridPos"]["w"].as_u64().is_some() && panel["gridPos"]["h"].as_u64().is_some(),
            "panel `{title}` has no gridPos"
        );
        let kind = panel["type"].as_str().context("panel without a type")?;
        if kind == "row" {
            if let Some(children) = panel["panels"].as_array() {
                collect_panels(children, queries, ids)?;
            }
            continue;
        }
        ensure!(
            datasource_uid(panel) == Some("${datasource}"),
            "panel `{title}` does not use the ${{datasource}} variable"
        );
        let targets = panel["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .with_context(|| format!("panel `{title}` has no targets"))?;
        for target in targets {
            let ref_id = target["refId"].as_str().unwrap_or("?");
            ensure!(
                datasource_uid(target) == Some("${datasource}"),
                "panel `{title}` target {ref_id} does not use the ${{datasource}} variable"
            );
            let expr = target["expr"]
                .as_str()
                .filter(|e| !e.trim().is_empty())
                .with_context(|| format!("panel `{title}` target {ref_id} has no expr"))?;
            queries.push(DashboardQuery {
                location: format!("panel `{title}` target {ref_id}"),
                expr: expr.to_owned(),
                legend: target["legendFormat"].as_str().map(str::to_owned),
            });
        }
        if let Some(children) = panel["panels"].as_array() {
            collect_panels(children, queries, ids)?;
        }
    }
    Ok(())
}

/// Parses a templating variable's query into PromQL plus, for `label_values`, the label.
fn variable_query(query: &str) -> Result<(String, Option<String>)> {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        let (selector, label) = inner
            .rsplit_once(',')
            .with_context(|| format!("`{query}`: label_values needs a metric selector"))?;
        return Ok((selector.trim().to_owned(), Some(label.trim().to_owned())));
    }
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return Ok((inner.to_owned(), None));
    }
    bail!("unsupported variable query `{query}`")
}

/// Checks the dashboard; returns the analysis of its queries.
fn check_dashboard(catalog: &Catalog, dashboard: &Value) -> Result<Analysis> {
    let schema = dashboard["schemaVersion"]
        .as_u64()
        .context("dashboard without schemaVersion")?;
    ensure!(schema >= 39, "schemaVersion {schema} < 39");
    ensure!(
        dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "dashboard without a uid"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .context("dashboard without templating variables")?;
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name);
    let datasource = variable("datasource").context("no `datasource` variable")?;
    ensure!(
        datasource["type"] == "datasource" && datasource["query"] == "prometheus",
        "`datasource` must be a Prometheus data-source variable"
    );
    let instance = variable("instance").context("no `instance` variable")?;
    ensure!(
        instance["multi"] == true && instance["includeAll"] == true,
        "`instance` must be multi-value with All"
    );
    let variable_names: BTreeSet<String> = variables
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();

    let mut analysis = Analysis::default();
    for var in variables {
        let name = var["name"].as_str().unwrap_or("?");
        if var["type"] != "query" {
            continue;
        }
        ensure!(
            datasource_uid(var) == Some("${datasource}"),
            "variable `{name}` does not use the ${{datasource}} variable"
        );
        // Grafana 10+ stores an object; older dashboards a string.
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .with_context(|| format!("variable `{name}` has no query"))?;
        let (promql, label) = variable_query(query)?;
        let location = format!("variable `{name}`");
        let promql = expand_variables(&promql, &variable_names)?;
        if let Some((_, labels)) = analysis.check(catalog, &location, &promql)
            && let Some(label) = label
            && !labels.contains(&label)
        {
            analysis
                .problems
                .push(format!("{location}: `{promql}` has no label `{label}`"));
        }
    }
    ensure!(
        instance["query"]["query"]
            .as_str()
            .or_else(|| instance["query"].as_str())
            .is_some_and(|q| q.contains(names::MODEL_INFO)),
        "`instance` must list the instances of {}",
        names::MODEL_INFO
    );

    let mut queries = Vec::new();
    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"]
        .as_array()
        .context("dashboard without panels")?;
    collect_panels(panels, &mut queries, &mut ids)?;
    ensure!(queries.len() >= 20, "only {} queries", queries.len());
    for query in &queries {
        let promql = expand_variables(&query.expr, &variable_names)
            .with_context(|| query.location.clone())?;
        let Some((_, labels)) = analysis.check(catalog, &query.location, &promql) else {
            continue;
        };
        for label in template_labels(query.legend.as_deref().unwrap_or(""), "{{") {
            if !labels.contains(&label) {
                analysis.problems.push(format!(
                    "{}: legend uses `{label}`, which `{}` does not keep (keeps {labels:?})",
                    query.location, query.expr
                ));
            }
        }
    }
    Ok(analysis)
}

// ------------------------------------------------------------------------------------------
// The rules
// ------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// A Prometheus duration (`0s`/`0m` included, which `parse_duration` refuses).
fn check_duration(text: &str) -> Result<()> {
    let unit = text.trim_start_matches('0');
    let zero = unit.len() < text.len() && ["ms", "s", "m", "h", "d", "w", "y"].contains(&unit);
    if zero {
        return Ok(());
    }
    promql_parser::util::parse_duration(text)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("`{text}` is no duration: {e}"))
}

/// Checks the rules; returns the analysis and the families each alert queries.
fn check_rules(
    catalog: &Catalog,
    file: &RuleFile,
) -> Result<(Analysis, BTreeMap<String, BTreeSet<String>>)> {
    let mut analysis = Analysis::default();
    let mut alerts = BTreeMap::new();
    ensure!(!file.groups.is_empty(), "no rule groups");
    let mut group_names = BTreeSet::new();
    for group in &file.groups {
        ensure!(
            group_names.insert(&group.name),
            "group `{}` twice",
            group.name
        );
        if let Some(interval) = &group.interval {
            check_duration(interval)?;
        }
        ensure!(!group.rules.is_empty(), "group `{}` is empty", group.name);
        for rule in &group.rules {
            let location = format!("alert `{}`", rule.alert);
            for duration in rule.for_.iter().chain(&rule.keep_firing_for) {
                check_duration(duration).with_context(|| location.clone())?;
            }
            let severity = rule
                .labels
                .get("severity")
                .with_context(|| format!("{location} has no severity"))?;
            ensure!(
                SEVERITIES.contains(&severity.as_str()),
                "{location}: severity `{severity}` is none of {SEVERITIES:?}"
            );
            for key in ["summary", "description", "runbook"] {
                ensure!(
                    rule.annotations
                        .get(key)
                        .is_some_and(|a| !a.trim().is_empty()),
                    "{location} has no `{key}` annotation"
                );
            }
            let Some((expr, labels)) = analysis.check(catalog, &location, &rule.expr) else {
                continue;
            };
            ensure!(
                expr.value_type() == ValueType::Vector,
                "{location}: `{}` is a {}, not a vector",
                rule.expr,
                expr.value_type()
            );
            for (key, text) in &rule.annotations {
                for label in template_labels(text, "$labels.") {
                    if !labels.contains(&label) {
                        analysis.problems.push(format!(
                            "{location}: annotation `{key}` uses `$labels.{label}`, which the \
                             expression does not keep (keeps {labels:?})"
                        ));
                    }
                }
            }
            let families = families_of(catalog, &expr);
            ensure!(
                alerts.insert(rule.alert.clone(), families).is_none(),
                "{location} twice"
            );
        }
    }
    Ok((analysis, alerts))
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

fn report(what: &str, analysis: &Analysis) -> Result<()> {
    ensure!(
        analysis.problems.is_empty(),
        "{what}: {} problem(s):\n  {}",
        analysis.problems.len(),
        analysis.problems.join("\n  ")
    );
    Ok(())
}

#[test]
fn the_dashboard_queries_only_exported_metrics_and_uses_every_family() -> Result<()> {
    let catalog = Catalog::from_registry();
    let dashboard: Value = serde_json::from_str(&read_asset("grafana-dashboard.json")?)
        .context("grafana-dashboard.json is not JSON")?;
    let analysis = check_dashboard(&catalog, &dashboard)?;
    report("grafana-dashboard.json", &analysis)?;
    let wanted = names::ALL
        .iter()
        .chain(&["process_cpu_seconds_total", "process_resident_memory_bytes"]);
    let missing: Vec<&str> = wanted
        .filter(|f| !analysis.families.contains(**f))
        .copied()
        .collect();
    ensure!(
        missing.is_empty(),
        "the dashboard never queries {missing:?}"
    );
    Ok(())
}

#[test]
fn the_alert_rules_query_only_exported_metrics_and_cover_the_failure_modes() -> Result<()> {
    let catalog = Catalog::from_registry();
    let file: RuleFile = serde_yaml_ng::from_str(&read_asset("alert-rules.yaml")?)
        .context("alert-rules.yaml is no Prometheus rule file")?;
    let (analysis, alerts) = check_rules(&catalog, &file)?;
    report("alert-rules.yaml", &analysis)?;
    for (alert, families) in REQUIRED_ALERTS {
        let queried = alerts
            .get(alert)
            .with_context(|| format!("no alert `{alert}`"))?;
        for family in families {
            ensure!(
                queried.contains(*family),
                "alert `{alert}` does not query {family} (queries {queried:?})"
            );
        }
    }
    ensure!(
        file.groups
            .iter()
            .flat_map(|g| &g.rules)
            .any(|r| r.alert == "TesseraOperatorPaused" && r.labels["severity"] == "info"),
        "TesseraOperatorPaused must be informational"
    );
    // The README explains every alert.
    let readme = read_asset("README.md")?;
    for alert in alerts.keys() {
        ensure!(
            readme.contains(&format!("`{alert}`")),
            "README.md does not explain `{alert}`"
        );
    }
    Ok(())
}

/// The checker itself catches the mistakes it exists for.
#[test]
fn the_checker_rejects_wrong_queries() -> Result<()> {
    let catalog = Catalog::from_registry();
    let variables: BTreeSet<String> = ["instance".to_owned()].into();
    let problems = |promql: &str| -> Result<Vec<String>> {
        let mut analysis = Analysis::default();
        let promql = expand_variables(promql, &variables)?;
        analysis.check(&catalog, "probe", &promql);
        Ok(analysis.problems)
    };
    let good = [
        r#"sum by (queue) (tessera_queue_items_pushed_total{instance=~"$instance"}) - sum by (queue) (tessera_queue_items_popped_total)"#,
        "histogram_quantile(0.9, sum by (stage, le) (rate(tessera_pipeline_stage_latency_seconds_bucket[$__rate_interval])))",
        r#"{__name__="tessera_model_info", model="m"}"#,
        "deriv(sum by (topic) (tessera_ingest_consumer_lag_messages)[10m:1m]) > 0",
    ];
    for promql in good {
        let found = problems(promql)?;
        ensure!(found.is_empty(), "`{promql}` flagged: {found:?}");
    }
    let bad = [
        // A renamed metric.
        "rate(tessera_ingest_frames_consumed[5m])",
        // A histogram queried without its suffix.
        "tessera_pipeline_end_to_end_latency_seconds",
        // A label the family lacks.
        r#"tessera_queue_items_pushed_total{stage="decode"}"#,
        r#"process_resident_memory_bytes{namespace="prod"}"#,
        // Grouping by a label the input lacks.
        "sum by (kind) (rate(tessera_supervisor_actor_restarts_total[5m]))",
        // Matching on a label one side lacks.
        "tessera_ingest_operator_paused * on (partition) tessera_ingest_consumer_lag_messages",
        // A quantile of buckets aggregated away from `le`.
        "histogram_quantile(0.9, sum by (stage) (rate(tessera_pipeline_stage_latency_seconds_bucket[5m])))",
        // rate() of a gauge.
        "rate(tessera_pipeline_frames_in_flight[5m])",
        // A multi-value variable with `=`.
        r#"tessera_model_info{instance="$instance"}"#,
        // No parse.
        "sum(rate(tessera_ingest_frames_consumed_total[5m])",
    ];
    for promql in bad {
        ensure!(!problems(promql)?.is_empty(), "`{promql}` not flagged");
    }
    ensure!(
        expand_variables("rate(x[$__rate_interval]) * $namespace", &variables).is_err(),
        "an unknown variable is not flagged"
    );
    Ok(())
}
