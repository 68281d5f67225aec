//! Every word of the DSL. Each set of words is one enum, written once: the
//! parser reads a word with `parse`, and the messages and "did you mean"
//! suggestions list the same set with `words` (in the order written here,
//! which also settles ties between equally close suggestions).

/// Declares a keyword enum: its variants and their words, `ALL` (in
/// order), `word`, `parse` and `words`.
macro_rules! keywords {
    (
        $(#[$meta:meta])*
        $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        // Not every set needs every accessor.
        #[allow(dead_code)]
        impl $name {
            /// Every keyword of the set, in order.
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The keyword as a document writes it.
            pub(crate) const fn word(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The keyword written `word`, if it is one of the set.
            pub(crate) fn parse(word: &str) -> Option<$name> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Every word of the set, in order.
            pub(crate) fn words() -> impl Iterator<Item = &'static str> + Clone {
                Self::ALL.iter().map(|k| k.word())
            }
        }
    };
}

keywords! {
    /// The top-level keys of a document, other than the analytics forms.
    Clause {
        Select = "select",
        From = "from",
        Where = "where",
        GroupBy = "group-by",
        Having = "having",
        OrderBy = "order-by",
        Limit = "limit",
        Offset = "offset",
        Explain = "explain",
        AsOf = "as-of",
    }
}

keywords! {
    /// The analytics forms; a document has at most one, and no `select`,
    /// `group-by` or `having` with it.
    FormName {
        TimeSeries = "time-series",
        Funnel = "funnel",
        Retention = "retention",
        Cohort = "cohort",
        Anomalies = "anomalies",
        Trend = "trend",
    }
}

/// Every top-level key: the clauses, then the forms.
pub(crate) fn top_level_words() -> impl Iterator<Item = &'static str> + Clone {
    Clause::words().chain(FormName::words())
}

keywords! {
    /// The keys of the analytics forms' objects; [`FormName::keys`] says
    /// which form takes which.
    FormKey {
        Interval = "interval",
        Aggregations = "aggregations",
        Fill = "fill",
        Start = "start",
        End = "end",
        By = "by",
        TimeColumn = "time-column",
        Metric = "metric",
        Algorithm = "algorithm",
        Method = "method",
        Sensitivity = "sensitivity",
        Periods = "periods",
        Alpha = "alpha",
        Beta = "beta",
        CohortEvent = "cohort-event",
        ReturnEvent = "return-event",
        Period = "period",
        Entity = "entity",
        Steps = "steps",
        Window = "window",
        Mode = "mode",
        Breakdown = "breakdown",
    }
}

impl FormName {
    /// The keys this form's object may have, in the order its messages
    /// list them.
    pub(crate) fn keys(self) -> &'static [FormKey] {
        use FormKey::*;
        match self {
            FormName::TimeSeries => &[Interval, Aggregations, Fill, Start, End, By, TimeColumn],
            FormName::Anomalies => &[
                Metric,
                Interval,
                Algorithm,
                Method,
                Sensitivity,
                Fill,
                Start,
                End,
                TimeColumn,
            ],
            FormName::Trend => &[
                Metric, Interval, Periods, Method, Alpha, Beta, Fill, Start, End, TimeColumn,
            ],
            FormName::Retention | FormName::Cohort => &[
                CohortEvent,
                ReturnEvent,
                Period,
                Periods,
                Entity,
                TimeColumn,
            ],
            FormName::Funnel => &[Steps, Window, Mode, Breakdown, Entity, TimeColumn],
        }
    }
}

keywords! {
    /// The operators and helpers of `[operator, args...]` expressions (the
    /// aggregations are [`Aggregation`]).
    Op {
        And = "and",
        Or = "or",
        Not = "not",
        Eq = "=",
        NotEq = "!=",
        Lt = "<",
        LtEq = "<=",
        Gt = ">",
        GtEq = ">=",
        In = "in",
        NotIn = "not-in",
        Between = "between",
        Like = "like",
        ILike = "ilike",
        IsNull = "is-null",
        NotNull = "not-null",
        Contains = "contains",
        Plus = "+",
        Minus = "-",
        Multiply = "*",
        Divide = "/",
        Modulo = "%",
        As = "as",
        Col = "col",
        Lit = "lit",
        Payload = "payload",
        Fn = "fn",
        Now = "now",
        DaysAgo = "days-ago",
        HoursAgo = "hours-ago",
        MinutesAgo = "minutes-ago",
        Since = "since",
        Until = "until",
    }
}

/// How many arguments an operator or aggregation takes: at least `min`, at
/// most `max`, and how a message describes that.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arity {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) usage: &'static str,
}

const fn exactly(n: usize, usage: &'static str) -> Arity {
    Arity {
        min: n,
        max: n,
        usage,
    }
}

const fn at_least(n: usize, usage: &'static str) -> Arity {
    Arity {
        min: n,
        max: usize::MAX,
        usage,
    }
}

impl Op {
    pub(crate) const fn arity(self) -> Arity {
        use Op::*;
        match self {
            And | Or => at_least(1, "at least 1 argument"),
            Payload => at_least(1, "at least 1 field name"),
            Fn => at_least(1, "a function name and its arguments"),
            Not | IsNull | NotNull | Col | Lit | DaysAgo | HoursAgo | MinutesAgo => {
                exactly(1, "1 argument")
            }
            Since | Until => exactly(1, "1 argument: a time"),
            Now => exactly(0, "no arguments"),
            In | NotIn => exactly(2, "a value and a list: [\"in\", column, [v1, v2, ...]]"),
            Between => exactly(3, "3 arguments: [\"between\", column, low, high]"),
            As => exactly(2, "2 arguments: [\"as\", expression, \"name\"]"),
            Eq | NotEq | Lt | LtEq | Gt | GtEq | Like | ILike | Contains | Plus | Minus
            | Multiply | Divide | Modulo => exactly(2, "2 arguments"),
        }
    }

    /// How many seconds one unit of a `*-ago` helper is.
    pub(crate) const fn seconds_ago(self) -> Option<i64> {
        match self {
            Op::DaysAgo => Some(86_400),
            Op::HoursAgo => Some(3_600),
            Op::MinutesAgo => Some(60),
            _ => None,
        }
    }
}

keywords! {
    /// The aggregations the DSL knows by name.
    Aggregation {
        Count = "count",
        Sum = "sum",
        Avg = "avg",
        Min = "min",
        Max = "max",
        Stddev = "stddev",
        Variance = "variance",
        Percentile = "percentile",
        Median = "median",
        CountDistinct = "count-distinct",
        ApproxCountDistinct = "approx-count-distinct",
        ApproxPercentile = "approx-percentile",
        First = "first",
        Last = "last",
    }
}

impl Aggregation {
    pub(crate) const fn arity(self) -> Arity {
        match self {
            Aggregation::Count => Arity {
                min: 0,
                max: 1,
                usage: "0 or 1 argument",
            },
            Aggregation::Percentile | Aggregation::ApproxPercentile => {
                exactly(2, "2 arguments: [\"percentile\", column, p]")
            }
            _ => exactly(1, "1 argument"),
        }
    }

    /// The session's aggregate function that computes it.
    pub(crate) const fn function(self) -> &'static str {
        use Aggregation::*;
        match self {
            Count | CountDistinct => "count",
            Sum => "sum",
            Avg => "avg",
            Min => "min",
            Max => "max",
            Stddev => "stddev",
            Median => "median",
            Variance => "var_samp",
            ApproxCountDistinct => "approx_distinct",
            Percentile => "percentile_cont",
            ApproxPercentile => "approx_percentile_cont",
            First => "first_value",
            Last => "last_value",
        }
    }

    /// Whether it takes a fraction from 0 to 1 after its argument.
    pub(crate) const fn takes_fraction(self) -> bool {
        matches!(
            self,
            Aggregation::Percentile | Aggregation::ApproxPercentile
        )
    }
}

/// Every word of an `[operator, ...]` array: operators, then
/// aggregations.
pub(crate) fn operator_words() -> impl Iterator<Item = &'static str> + Clone {
    Op::words().chain(Aggregation::words())
}

keywords! {
    /// The sort directions of `order-by`.
    Direction {
        Asc = "asc",
        Desc = "desc",
    }
}

keywords! {
    /// The methods of the `trend` form.
    TrendMethodName {
        Linear = "linear",
        Holt = "holt",
    }
}

/// Longest word a suggestion is looked for: comparing costs the product of
/// the lengths, and a word this long is no typo of a name.
const MAX_SUGGESTED_BYTES: usize = 128;

/// The closest of `candidates` to `word`, if it is close enough to be a
/// likely typo, as ` (did you mean "…"?)`; otherwise nothing.
pub(crate) fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    if word.len() > MAX_SUGGESTED_BYTES {
        return String::new();
    }
    let best = candidates
        .into_iter()
        .map(|c| {
            (
                datafusion::common::utils::datafusion_strsim::levenshtein(word, c),
                c,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= (word.len() / 3).max(2) => format!(" (did you mean \"{c}\"?)"),
        _ => String::new(),
    }
}

/// `"a" or "b"`, `"a", "b" or "c"`: a set's words for a message.
pub(crate) fn alternatives(words: impl Iterator<Item = &'static str>) -> String {
    let quoted: Vec<String> = words.map(|w| format!("\"{w}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_back_and_no_set_repeats_a_word() {
        fn check<K: Copy + PartialEq + std::fmt::Debug>(
            all: &[K],
            word: fn(K) -> &'static str,
            parse: fn(&str) -> Option<K>,
        ) {
            for (i, k) in all.iter().enumerate() {
                assert_eq!(parse(word(*k)), Some(*k));
                assert!(all[..i].iter().all(|o| word(*o) != word(*k)), "{k:?}");
            }
        }
        check(Clause::ALL, Clause::word, Clause::parse);
        check(FormName::ALL, FormName::word, FormName::parse);
        check(FormKey::ALL, FormKey::word, FormKey::parse);
        check(Op::ALL, Op::word, Op::parse);
        check(Aggregation::ALL, Aggregation::word, Aggregation::parse);
        check(Direction::ALL, Direction::word, Direction::parse);
        check(
            TrendMethodName::ALL,
            TrendMethodName::word,
            TrendMethodName::parse,
        );
        // an operator word never shadows an aggregation, nor a clause a form
        assert!(Op::words().all(|w| Aggregation::parse(w).is_none()));
        assert!(Clause::words().all(|w| FormName::parse(w).is_none()));
    }

    #[test]
    fn suggestions_and_alternatives() {
        assert_eq!(suggest("==", operator_words()), " (did you mean \"=\"?)");
        assert_eq!(
            suggest("selct", top_level_words()),
            " (did you mean \"select\"?)"
        );
        assert_eq!(suggest("zzzzzzzz", top_level_words()), "");
        assert_eq!(suggest(&"x".repeat(200), ["x"]), "");
        assert_eq!(
            alternatives(TrendMethodName::words()),
            "\"linear\" or \"holt\""
        );
        assert_eq!(alternatives(Direction::words().take(1)), "\"asc\"");
    }
}
