//! Small course-shaped datasets and a WordPiece vocabulary, made by the
//! tests themselves (never read from outside the repository).

/// `(tag, share)` as in the course's dataset: 310, 285, 106, 63 rows of 764.
pub const TAGS: [(&str, u64); 4] =
    [("natural-language-processing", 310), ("computer-vision", 285), ("other", 106), ("mlops", 63)];

const TITLE_WORDS: &[&str] = &[
    "Transformers",
    "for",
    "the",
    "Image",
    "Segmentation",
    "with",
    "PyTorch",
    "A",
    "Survey",
    "of",
    "Graph",
    "Neural",
    "Networks",
    "BERT",
    "is",
    "all",
    "you",
    "need",
    "MLOps",
    "in",
    "Production",
    "Vision",
    "Détection",
    "ΑΣ",
    "don't",
    "it's",
    "State-of-the-art",
    "NLP",
    "Models",
    "résumé",
    "K8s",
    "GPT-3",
];
const DESCRIPTION_WORDS: &[&str] = &[
    "We",
    "present",
    "a",
    "new",
    "method",
    "that",
    "learns",
    "from",
    "data",
    "and",
    "generalizes",
    "to",
    "unseen",
    "tasks.",
    "See",
    "https://github.com/org/repo",
    "for",
    "code,",
    "\"quoted\"",
    "words",
    "and",
    "commas,",
    "too!",
    "Über",
    "naïve",
    "café",
    "ﬁne",
    "tuning",
    "(2020)",
    "x²",
    "the\u{301}",
    "you're",
    "it's",
    "\u{130}stanbul",
];

#[derive(Debug, Clone)]
pub struct Row {
    pub id: u64,
    pub title: String,
    pub description: String,
    pub tag: String,
}

/// A small seeded generator (splitmix64), so a failing case can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn sentence(rng: &mut Rng, words: &[&str], min: usize, max: usize) -> String {
    let n = min + rng.below(max - min + 1);
    let mut parts: Vec<&str> = (0..n).map(|_| words[rng.below(words.len())]).collect();
    if rng.below(8) == 0 {
        parts.push("\nSecond line");
    }
    parts.join(" ")
}

/// `n` rows whose tags follow the course's proportions, in a mixed order.
pub fn course_rows(n: usize, seed: u64) -> Vec<Row> {
    let mut rng = Rng(seed);
    let total: u64 = TAGS.iter().map(|(_, c)| c).sum();
    (0..n)
        .map(|i| {
            let mut pick = rng.next() % total;
            let tag = TAGS
                .iter()
                .find(|(_, c)| {
                    if pick < *c {
                        true
                    } else {
                        pick -= c;
                        false
                    }
                })
                .unwrap()
                .0;
            Row {
                id: 1000 + i as u64,
                title: sentence(&mut rng, TITLE_WORDS, 2, 8),
                description: sentence(&mut rng, DESCRIPTION_WORDS, 0, 30),
                tag: tag.to_string(),
            }
        })
        .collect()
}

fn quote(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

pub fn to_csv(rows: &[Row]) -> String {
    let mut csv = String::from("id,created_on,title,description,tag\n");
    for row in rows {
        csv.push_str(&format!(
            "{},2020-02-20 06:43:18,{},{},{}\n",
            row.id,
            quote(&row.title),
            quote(&row.description),
            row.tag
        ));
    }
    csv
}

pub fn to_jsonl(rows: &[Row]) -> String {
    rows.iter()
        .map(|r| {
            serde_json::json!({"id": r.id, "created_on": "2020-02-20 06:43:18", "title": r.title, "description": r.description, "tag": r.tag})
                .to_string()
                + "\n"
        })
        .collect()
}

/// The rows as a Parquet file, written by polars.
pub fn to_parquet(rows: &[Row]) -> Vec<u8> {
    use polars::prelude::*;
    let mut frame = df!(
        "id" => rows.iter().map(|r| r.id as i64).collect::<Vec<_>>(),
        "title" => rows.iter().map(|r| r.title.clone()).collect::<Vec<_>>(),
        "description" => rows.iter().map(|r| r.description.clone()).collect::<Vec<_>>(),
        "tag" => rows.iter().map(|r| r.tag.clone()).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes).finish(&mut frame).unwrap();
    bytes
}

/// A WordPiece vocabulary of the tests' own: specials, every letter and
/// digit alone and as a `##` piece, and some whole words and suffixes.
pub fn vocab() -> String {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from).to_vec();
    for c in ('a'..='z').chain('0'..='9') {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    for w in [
        "transformers",
        "image",
        "segmentation",
        "pytorch",
        "survey",
        "graph",
        "neural",
        "networks",
        "bert",
        "mlops",
        "production",
        "vision",
        "state",
        "art",
        "nlp",
        "models",
        "present",
        "new",
        "method",
        "learns",
        "data",
        "github",
        "com",
        "org",
        "repo",
        "code",
        "quoted",
        "words",
        "commas",
        "##s",
        "##ing",
        "##ed",
        "##izes",
        "general",
    ] {
        vocab.push(w.to_string());
    }
    vocab.join("\n") + "\n"
}
