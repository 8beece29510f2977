//! The collector of one page of hits: the best `limit` hits (in the requested order) that sort
//! after a cursor, so that pages follow one another without an offset.

use std::cmp::Ordering;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use super::query::{Cursor, Order};

/// One hit: where it sorts and where its document is.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub cursor: Cursor,
    pub address: DocAddress,
}

/// The best `limit` hits after `after`.
pub struct PageCollector {
    pub order: Order,
    pub limit: usize,
    pub after: Option<Cursor>,
    /// The name of the stream-position fast field.
    pub position_field: &'static str,
}

/// The best hits seen so far: up to twice the limit are kept between truncations.
struct TopHits {
    order: Order,
    limit: usize,
    hits: Vec<Hit>,
    /// The worst hit kept after the last truncation: nothing that sorts after it can be kept.
    threshold: Option<Cursor>,
}

impl TopHits {
    fn new(order: Order, limit: usize) -> Self {
        Self {
            order,
            limit,
            hits: Vec::new(),
            threshold: None,
        }
    }

    fn push(&mut self, hit: Hit) {
        if self.limit == 0 {
            return;
        }
        if let Some(threshold) = &self.threshold
            && self.order.compare(&hit.cursor, threshold) != Ordering::Less
        {
            return;
        }
        self.hits.push(hit);
        if self.hits.len() >= self.limit * 2 {
            self.truncate();
            self.threshold = self.hits.last().map(|h| h.cursor);
        }
    }

    fn truncate(&mut self) {
        let order = self.order;
        self.hits
            .sort_unstable_by(|a, b| order.compare(&a.cursor, &b.cursor));
        self.hits.truncate(self.limit);
    }

    fn into_sorted(mut self) -> Vec<Hit> {
        self.truncate();
        self.hits
    }
}

impl Collector for PageCollector {
    type Fruit = Vec<Hit>;
    type Child = PageSegmentCollector;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageSegmentCollector> {
        Ok(PageSegmentCollector {
            segment,
            positions: reader.fast_fields().u64(self.position_field)?,
            order: self.order,
            after: self.after,
            top: TopHits::new(self.order, self.limit),
        })
    }

    fn requires_scoring(&self) -> bool {
        // `recent` reports the rank of each result too.
        true
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Hit>>) -> tantivy::Result<Vec<Hit>> {
        let mut top = TopHits::new(self.order, self.limit);
        for hit in fruits.into_iter().flatten() {
            top.push(hit);
        }
        Ok(top.into_sorted())
    }
}

pub struct PageSegmentCollector {
    segment: SegmentOrdinal,
    positions: Column<u64>,
    order: Order,
    after: Option<Cursor>,
    top: TopHits,
}

impl SegmentCollector for PageSegmentCollector {
    type Fruit = Vec<Hit>;

    fn collect(&mut self, doc: DocId, score: Score) {
        let Some(position) = self.positions.first(doc) else {
            return;
        };
        let cursor = Cursor { score, position };
        if let Some(after) = &self.after
            && self.order.compare(&cursor, after) != Ordering::Greater
        {
            return;
        }
        self.top.push(Hit {
            cursor,
            address: DocAddress::new(self.segment, doc),
        });
    }

    fn harvest(self) -> Vec<Hit> {
        self.top.into_sorted()
    }
}

#[cfg(test)]
mod tests {
    use tantivy::collector::Count;
    use tantivy::query::{AllQuery, TermQuery};
    use tantivy::schema::IndexRecordOption;
    use tantivy::{Index, IndexWriter, TantivyDocument, Term};

    use super::*;
    use crate::service::search::schema;

    fn index(docs: &[(&str, u64)]) -> (Index, schema::Fields) {
        let (schema, fields) = schema::schema();
        let index = Index::create_in_ram(schema);
        index
            .tokenizers()
            .register(schema::ANALYZER, schema::analyzer());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for (i, (body, position)) in docs.iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_text(fields.event_id, format!("$e{i}"));
            doc.add_text(fields.body, *body);
            doc.add_u64(fields.position, *position);
            writer.add_document(doc).unwrap();
            // Several segments.
            if i % 3 == 2 {
                writer.commit().unwrap();
            }
        }
        writer.commit().unwrap();
        (index, fields)
    }

    fn pages(index: &Index, query: &dyn tantivy::query::Query, order: Order) -> Vec<Vec<u64>> {
        let searcher = index.reader().unwrap().searcher();
        let mut after = None;
        let mut out = Vec::new();
        loop {
            let collector = PageCollector {
                order,
                limit: 2,
                after,
                position_field: "position",
            };
            let hits = searcher.search(query, &collector).unwrap();
            if hits.is_empty() {
                return out;
            }
            after = hits.last().map(|h| h.cursor);
            out.push(hits.iter().map(|h| h.cursor.position).collect());
        }
    }

    #[test]
    fn pages_follow_each_other_in_either_order() {
        let (index, _) = index(&[
            ("apple", 10),
            ("pear", 11),
            ("apple apple apple", 12),
            ("apple pie", 13),
            ("plum", 14),
            ("apple", 15),
            ("banana apple", 16),
        ]);
        assert_eq!(
            pages(&index, &AllQuery, Order::Recent),
            [vec![16, 15], vec![14, 13], vec![12, 11], vec![10]]
        );
        let (schema, fields) = schema::schema();
        let apple = TermQuery::new(
            Term::from_field_text(fields.body, "apple"),
            IndexRecordOption::WithFreqs,
        );
        let by_rank: Vec<u64> = pages(&index, &apple, Order::Rank)
            .into_iter()
            .flatten()
            .collect();
        // Every match once; the densest first; equal scores newest first.
        assert_eq!(by_rank.len(), 5);
        assert_eq!(by_rank[0], 12);
        assert!(by_rank.iter().position(|p| *p == 15) < by_rank.iter().position(|p| *p == 10));
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.search(&apple, &Count).unwrap(), 5);
        drop(schema);
    }

    #[test]
    fn top_hits_keep_the_best() {
        let mut top = TopHits::new(Order::Recent, 3);
        for position in [5, 1, 9, 7, 3, 8, 2, 6, 4] {
            top.push(Hit {
                cursor: Cursor {
                    score: 0.0,
                    position,
                },
                address: DocAddress::new(0, 0),
            });
        }
        let kept: Vec<u64> = top
            .into_sorted()
            .iter()
            .map(|h| h.cursor.position)
            .collect();
        assert_eq!(kept, [9, 8, 7]);
    }
}
