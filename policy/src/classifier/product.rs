//! A [`Lookup`] flattened into one table of first slots, indexed by address class and port
//! class, for lookups whose slots constrain only the peer address and the port (ipBlocks,
//! Calico `nets`, ClassBench rule lists).
//!
//! The layered lookup searches the address map of the packet's port class, and a second map
//! when the rules over every port of a protocol are kept apart. Here the address space is cut
//! once, at every boundary of any of those maps, into *rows* (address intervals whose first
//! slot is the same in every port class), and the ports into *columns* (port classes whose
//! first slot is the same in every row). A lookup is then one address search, one port search
//! and one load, however many maps the layered lookup has.
//!
//! Rows × columns can grow with the product of the two (acl1 at 100k rules: 99,622 × 209,
//! 83 MB of `u32`). Past `CompileOptions::dense_product_budget`, the columns are cut into
//! chunks of 8 to 64 columns, and each row keeps only the number of each of its chunks (the
//! *chunked* shape, after the chunked cross-products of Gupta and McKeown's Recursive Flow
//! Classification). Rows share chunks: that acl1 table has 155,622 distinct chunks of 16
//! columns for 1.4M places in its rows, 15.5 MB in all. That costs one dependent load more
//! (1.0–1.3 × the dense table's time in `classbench_layouts`).
//!
//! A cell holds its first slot in two bytes while the lookup numbers fewer than `u16::MAX`
//! slots. The 100k ClassBench lists number 192k–200k, yet a table's cells hold far fewer
//! distinct ones (fw1's two tables 21,189 and 35,942, acl1's egress table 35,631): from
//! `CompileOptions::ranked_cells_bytes` of four-byte cells on, a cell holds its slot's rank
//! among them in two bytes ([`FlatCells::Ranked`]), for one more load from the slots of the
//! ranks. With ranks in every such table, fw1's classifier at 100k rules takes 10.7 MiB
//! instead of 15.6, and its lookups 4–5 ns more where the tables are warm: by default no
//! table keeps ranks.
//!
//! Where every row changes first slot at most four times over its columns, numbered in port
//! order, a row is better kept as its *steps* ([`RowSteps`]): the column where each step
//! starts and its slot in a 32-byte record, one load and a branch-free count per lookup. A
//! rule over a range of ports covers a range of columns in that order. Rules over a wide
//! prefix would still make many steps in every row they cover, so a record holds only where
//! its row is below a *base* row shared by a block of addresses ([`BlockBases`]; the highest
//! slot of each column in the block), and a lookup takes the lower of the two. IPv4 records
//! are kept one per address interval, in address order and with the interval's first
//! address, so that the address search ends on the record ([`V4Rows::Records`]). At 100k
//! rules, acl1's ingress table (at most five steps per row) is 6.4 MB of records against
//! 15.5 MB of chunks, and ipc1's classifier, both its tables in steps (65 steps per row over
//! no base, at most five over theirs), 16.2 MiB (34.4 when they were chunked).
//!
//! A product is dense within `CompileOptions::dense_product_budget`, else in steps within
//! `CompileOptions::steps_product_budget` if every row has so few, else chunked within
//! `CompileOptions::product_budget`; past all of them, the layered lookup answers alone.
//!
//! A table with source-port rules (Calico `source.ports`, fw1 and ipc1) has two lookups per
//! packet: the main one, and the one of the packet's source-port class, if its slots can still
//! come first. A *joint* product answers both at once (see [`Product::build_joint`]): its
//! columns are grouped in *parts*, one per source-port class with rules of its own (and part 0
//! for the classes without), each answering the lower of the main lookup and its class's.
//! Parts share rows, and columns alike in every row are stored once, so a class costs columns
//! only where its rules change a first slot. fw1 at 1k and 10k rules: 0.70–0.85 × the time of
//! the two lookups, in a table of the same size (`classbench_layouts`).
//!
//! A lookup is a chain of dependent loads (the row's bucket, its steps, the chunk number, the
//! cell), each a cache miss once the table outgrows the caches: at 100k rules, 150 ns apiece on
//! the machines in BENCHMARKS.md. [`first_each`] runs many lookups stage by stage with
//! prefetches, so that their misses overlap; `Classifier::decide_each` uses it for products of
//! at least `CompileOptions::staged_product_bytes`.

use std::net::IpAddr;

use crate::inventory::Protocol;

use arrayvec::ArrayVec;
use prefetch_index::prefetch_index;

use super::intervals::{Bucket, ByStart, Interner, Intervals, Key, Starting, Window};
use super::ports::PortTable;
use super::{Lookup, PortClass, NONE};

/// First slots, one per column of a chunk; or each row as steps.
#[derive(Debug)]
enum Cells {
    /// The dense and chunked shapes'.
    Flat(FlatCells),
    /// Rows over their block's base ([`Shape::Steps`]): the IPv4 ones are in
    /// [`V4Rows::Records`], the IPv6 ones here, one per distinct row.
    Steps {
        v6_records: Box<[RowSteps]>,
        bases: BlockBases,
    },
}

/// A dense or chunked table's cells, in two bytes each where its slots allow (see
/// [`CellSlots`]); `u16::MAX` stands for `NONE` in both narrow forms.
#[derive(Debug)]
enum FlatCells {
    /// Every slot of the lookup below `u16::MAX`.
    Narrow(Box<[u16]>),
    /// Slots past `u16::MAX`, but fewer distinct ones in the table's cells: each cell holds
    /// its slot's rank among them, and `slots` the slot of each rank. Half the bytes of
    /// [`FlatCells::Wide`] for one more load, from an array of at most 256 KiB that every
    /// lookup shares: fw1's 100k-rule tables hold 21,189 and 35,942 distinct slots of
    /// 192,774, acl1's egress table 35,631 of 199,622 (see
    /// `CompileOptions::ranked_cells_bytes` for when a table keeps ranks).
    Ranked {
        ranks: Box<[u16]>,
        slots: Box<[u32]>,
    },
    Wide(Box<[u32]>),
}

impl FlatCells {
    /// The slot of cell `at`, or `NONE`.
    #[inline]
    fn slot(&self, at: usize) -> u32 {
        match self {
            FlatCells::Narrow(slots) => match slots[at] {
                u16::MAX => NONE,
                slot => u32::from(slot),
            },
            FlatCells::Ranked { ranks, slots } => match ranks[at] {
                u16::MAX => NONE,
                rank => slots[usize::from(rank)],
            },
            FlatCells::Wide(slots) => slots[at],
        }
    }

    #[inline]
    fn prefetch(&self, at: usize) {
        match self {
            FlatCells::Narrow(cells) | FlatCells::Ranked { ranks: cells, .. } => {
                prefetch_index(cells, at)
            }
            FlatCells::Wide(cells) => prefetch_index(cells, at),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            FlatCells::Narrow(cells) => std::mem::size_of_val(&**cells),
            FlatCells::Ranked { ranks, slots } => {
                std::mem::size_of_val(&**ranks) + std::mem::size_of_val(&**slots)
            }
            FlatCells::Wide(cells) => std::mem::size_of_val(&**cells),
        }
    }
}

/// How many of an address's top bits pick its block ([`BlockBases`]).
const BLOCK_BITS: u32 = 8;

/// The block of `key`: its top [`BLOCK_BITS`] bits.
#[inline]
fn block_of<K: Key>(key: K) -> usize {
    (key.to_u128() >> (K::BITS - BLOCK_BITS)) as usize
}

/// The first key of block `block`.
fn block_start<K: Key>(block: usize) -> K {
    K::from_u128((block as u128) << (K::BITS - BLOCK_BITS))
}

/// For the steps shape, a *base* row per block of addresses (each family's addresses cut by
/// their top 8 bits): the highest slot of each column over the rows in the block. Every row
/// is at or below its block's base in every column, so a row's record need only hold the
/// columns where it is below, and may hold anything from the base up elsewhere: a lookup takes
/// the lower of the record's slot and the base's. Rules over a wide prefix (ipc1's 3,408 over
/// 0.0.0.0/0 and 2,086 over a /1) then stay in the base, and a row's own rules make few steps:
/// ipc1's rows at 100k rules have 65 steps on average over no base, at most 5 over these.
/// The block comes from the address alone, so the base's load does not wait for the row's.
#[derive(Debug)]
struct BlockBases {
    v4: Box<[u16]>,
    v6: Box<[u16]>,
    width: usize,
    /// The distinct bases, `width` slots each, columns in port order.
    slots: Box<[u32]>,
}

impl BlockBases {
    #[inline]
    fn slot(&self, peer: IpAddr, column: u32) -> u32 {
        let base = match peer {
            IpAddr::V4(a) => self.v4[block_of(u32::from(a))],
            IpAddr::V6(a) => self.v6[block_of(u128::from(a))],
        };
        self.slots[usize::from(base) * self.width + column as usize]
    }

    fn heap_bytes(&self) -> usize {
        (self.v4.len() + self.v6.len()) * 2 + self.slots.len() * 4
    }
}

/// A row as at most [`RowSteps::MAX`] steps over its columns, numbered in port order (see
/// [`Merge::in_port_order`]): step 0 holds from column 0, step *i* from `starts` lane *i − 1*.
/// 32 bytes, aligned so that a record never straddles two cache lines: a lookup is one load
/// and a branch-free count of the lanes at or below its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
struct RowSteps {
    /// Where steps 1 to 4 start, one per 16-bit lane; [`RowSteps::UNUSED`] past the last step.
    starts: u64,
    slots: [u32; RowSteps::MAX],
    /// In a record of [`V4Rows::Records`], the first address of its interval (0 elsewhere):
    /// the four bytes the alignment would pad.
    from: u32,
}

impl Starting<u32> for RowSteps {
    #[inline]
    fn start(&self) -> u32 {
        self.from
    }
}

/// How a lookup finds an IPv4 peer's row.
#[derive(Debug)]
enum V4Rows {
    /// Address → row number (dense and chunked shapes).
    Numbers(Intervals<u32>),
    /// The steps shape's records, one per address interval in address order, each with its
    /// first address; a row is its record's index. The search ends on the record itself,
    /// where a row number is one dependent load more before its record: at 100k ClassBench
    /// rules, 0.84–0.99 × the time of a lookup where the caches are cold, 0.9 × (ipc1) to
    /// 1.05 × (acl1) where they are warm, for twice the records (BENCHMARKS.md, *IPv4 records
    /// in address order* and its correction in *Ranked cells*). IPv6 rows stay numbered: a
    /// record cannot hold an IPv6 start, and the lists have few.
    Records(ByStart<u32, RowSteps>),
}

/// `$call` on the [`ByStart`] index of either kind of [`V4Rows`], named `$index`: the stages
/// of the search are the same for both.
macro_rules! on_index {
    ($rows:expr, $index:ident => $call:expr) => {
        match $rows {
            V4Rows::Numbers($index) => $call,
            V4Rows::Records($index) => $call,
        }
    };
}

impl V4Rows {
    #[inline]
    fn bucket(&self, key: u32) -> Bucket {
        on_index!(self, index => index.bucket(key))
    }

    #[inline]
    fn prefetch_bucket(&self, bucket: Bucket) {
        on_index!(self, index => index.prefetch_bucket(bucket))
    }

    #[inline]
    fn window(&self, bucket: Bucket) -> Window {
        on_index!(self, index => index.window(bucket))
    }

    #[inline]
    fn prefetch_window(&self, window: Window) {
        on_index!(self, index => index.prefetch_window(window))
    }

    #[inline]
    fn row_in(&self, key: u32, window: Window) -> usize {
        match self {
            V4Rows::Numbers(rows) => rows.class_in(key, window) as usize,
            V4Rows::Records(records) => records.index_in(key, window),
        }
    }

    #[inline]
    fn row_of(&self, key: u32) -> usize {
        self.row_in(key, self.window(self.bucket(key)))
    }

    /// Bytes of the index (the records are the table's: see [`Product::table_bytes`]).
    fn heap_bytes(&self) -> usize {
        match self {
            V4Rows::Numbers(rows) => rows.heap_bytes(),
            V4Rows::Records(records) => {
                records.heap_bytes() - std::mem::size_of_val(records.items())
            }
        }
    }
}

impl RowSteps {
    const MAX: usize = 5;
    /// Above every column of a table in this shape (its width is at most this), and below
    /// `0x8000`, so that the count in [`RowSteps::slot`] borrows from no other lane.
    const UNUSED: u16 = 0x7FFF;
    const LANES: u64 = 0x0001_0001_0001_0001;
    const HIGH_BITS: u64 = 0x8000_8000_8000_8000;
    /// Words of a record while the table is built: `starts` low and high, then the slots.
    const WORDS: usize = 2 + Self::MAX;

    /// The record of `row` (a slot per column) over `base` (at or above `row` in every
    /// column), as [`RowSteps::WORDS`] words, if at most [`RowSteps::MAX`] steps give the
    /// lower of theirs and the base's slot in every column: a column below the base needs its
    /// slot, any other column any slot from the base's up. Each step reaches as far as one slot
    /// allows, which makes the fewest steps.
    fn words_over(row: &[u32], base: &[u32]) -> Option<[u32; Self::WORDS]> {
        debug_assert_eq!(row.len(), base.len());
        debug_assert!(
            row.len() <= usize::from(Self::UNUSED),
            "columns below UNUSED"
        );
        let mut starts = [Self::UNUSED; Self::MAX - 1];
        let mut words = [NONE; Self::WORDS];
        let mut steps = 0;
        // The current step's slot once a column needs one; until then, the lowest slot the
        // step's columns allow.
        let mut needed: Option<u32> = None;
        let mut at_least = 0;
        for (column, (&slot, &floor)) in row.iter().zip(base).enumerate() {
            debug_assert!(slot <= floor, "a base at or above its rows");
            let below = slot < floor;
            let fits = match needed {
                _ if column == 0 => false,
                Some(step) if below => step == slot,
                Some(step) => step >= floor,
                None => !below || slot >= at_least,
            };
            if !fits {
                if steps == Self::MAX {
                    return None;
                }
                if steps > 0 {
                    words[2 + steps - 1] = needed.unwrap_or(NONE);
                    starts[steps - 1] = u16::try_from(column).ok()?;
                }
                steps += 1;
                (needed, at_least) = (None, 0);
            }
            if below {
                needed = Some(slot);
            } else {
                at_least = at_least.max(floor);
            }
        }
        if steps > 0 {
            words[2 + steps - 1] = needed.unwrap_or(NONE);
        }
        let packed = starts
            .iter()
            .rev()
            .fold(0u64, |packed, &s| (packed << 16) | u64::from(s));
        words[0] = packed as u32;
        words[1] = (packed >> 32) as u32;
        Some(words)
    }

    fn from_words(words: &[u32]) -> RowSteps {
        RowSteps {
            starts: u64::from(words[0]) | (u64::from(words[1]) << 32),
            slots: words[2..].try_into().expect("a record's words"),
            from: 0,
        }
    }

    /// The slot of `column` (below [`RowSteps::UNUSED`]): in each lane, `column + 0x8000 −
    /// start` keeps its high bit exactly where the start is at or below the column, so the
    /// number of such lanes is the step.
    #[inline]
    fn slot(&self, column: u32) -> u32 {
        let at = (u64::from(column) * Self::LANES) | Self::HIGH_BITS;
        let reached = ((at - self.starts) & Self::HIGH_BITS) >> 15;
        let step = (reached.wrapping_mul(Self::LANES) >> 48) as usize;
        self.slots[step.min(Self::MAX - 1)]
    }
}

/// Each row's chunk numbers, one per position of a chunk in the row.
#[derive(Debug)]
enum ChunkNumbers {
    /// One chunk per row, and chunk *r* is row *r*'s: no numbers stored.
    Dense,
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

/// How many column updates ([`Inputs::updates`]) a joint product's walks may make: each walk
/// makes them, and a table with many source-port classes has sources that feed many columns.
/// fw1's 100k-rule tables make 6.8M and 7.3M; ipc1's (past the byte budget anyway) 459M, which
/// took 11 s to find too big. (A shape also rehashes the chunks those updates reach, a whole
/// row for the dense shape; `Merge::bytes_at_least` skips a dense shape past its limit; the
/// steps shape reads whole rows too, within [`STEPS_WORK`].)
const JOINT_WORK: usize = 1 << 26;

/// How many slots the steps shape may read while it is built: each start whose row changed
/// costs a pass over the row's columns (`RowSteps::words_over`). ClassBench's 100k-rule
/// tables take up to 45M (acl1 ingress: 199,238 starts × 224 columns), about 0.2 s.
const STEPS_WORK: usize = 1 << 27;

/// How the cells are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A chunk is a whole row: one load.
    Dense,
    /// Each row as a record of at most [`RowSteps::MAX`] steps over its columns in port order,
    /// where it is below its block's base ([`BlockBases`]): one load of 32 bytes, and the
    /// base's slot, which does not wait for it. Only for tables whose every row has so few
    /// steps (acl1 at 100k rules: 3.2 MB of records against 15.5 MB of chunks).
    Steps,
    /// Chunks of `1 << shift` columns: a load of the chunk's number, then of the cell.
    Chunked { shift: u32 },
}

impl Shape {
    /// Dense first, then steps (each taken when it fits: one load), then chunks of 16, 32, 8
    /// and 64 columns: narrower chunks repeat more but cost more numbers per row. On the 100k
    /// ClassBench lists 16 gave the smallest table but for fw1's egress one (32 columns: 9.2
    /// MB against 9.4, 5.4 against 7.3 with ranked cells); 64 comes last, so that its pass
    /// stops as soon as it outgrows the smallest so far.
    const ALL: [Shape; 6] = [
        Shape::Dense,
        Shape::Steps,
        Shape::Chunked { shift: 4 },
        Shape::Chunked { shift: 5 },
        Shape::Chunked { shift: 3 },
        Shape::Chunked { shift: 6 },
    ];
}

/// How many bytes a product may take: in any shape, and of those, in the dense and the steps
/// shapes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budgets {
    pub(crate) any: usize,
    pub(crate) dense: usize,
    pub(crate) steps: usize,
    /// From how many bytes of four-byte cells a table keeps ranks (see [`FlatCells::Ranked`]).
    pub(crate) ranked_cells: usize,
}

impl Budgets {
    fn cell_width(self, slots: usize) -> CellWidth {
        CellWidth {
            slots,
            ranked_from: self.ranked_cells,
        }
    }

    /// Each shape with its limit of bytes.
    fn shapes(self) -> [(Shape, usize); 6] {
        Shape::ALL.map(|shape| {
            let limit = match shape {
                Shape::Dense => self.dense,
                Shape::Steps => self.steps,
                Shape::Chunked { .. } => self.any,
            };
            (shape, limit.min(self.any))
        })
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Product {
    v4_rows: V4Rows,
    v6_rows: Intervals<u128>,
    /// Part 0's columns: all of a lookup's product, or a joint product's main lookup alone.
    /// Kept in place, so that a lookup of part 0 costs no load more than before parts.
    first_part: PartColumns,
    /// A joint product's other parts (part *p* at `p - 1`), one per source-port class with
    /// rules of its own (see [`Product::build_joint`]).
    other_parts: Box<[PartColumns]>,
    /// Columns per chunk.
    chunk_len: usize,
    /// Column → the position of its chunk in the row (`column >> shift`) and its place in the
    /// chunk (`column & mask`).
    shift: u32,
    mask: u32,
    chunks_per_row: usize,
    chunk_numbers: ChunkNumbers,
    cells: Cells,
    /// Whether [`first_each`] looks it up in stages (see
    /// `CompileOptions::staged_product_bytes`).
    staged: bool,
}

/// Where a part's ports fall among the columns.
#[derive(Debug)]
struct PartColumns {
    /// Per protocol with a column of its own: port → column.
    by_protocol: Vec<(Protocol, PortTable<u16>)>,
    /// The column of every other protocol.
    other: u32,
}

impl PartColumns {
    #[inline]
    fn column(&self, protocol: Protocol, port: u16) -> u32 {
        self.by_protocol
            .iter()
            .find(|(p, _)| *p == protocol)
            .map_or(self.other, |(_, ports)| u32::from(ports.get(port)))
    }

    fn heap_bytes(&self) -> usize {
        self.by_protocol
            .iter()
            .map(|(_, m)| m.heap_bytes() + 16)
            .sum()
    }
}

impl Product {
    /// The product of `lookup`, if its slots (numbered below `slots`) constrain nothing but the
    /// peer address and the ports: dense if that fits in `budgets.dense` bytes, else in steps
    /// if every row has so few and they fit in `budgets.steps`, else in the smallest chunked
    /// shape, if that fits in `budgets.any`.
    pub(crate) fn build(lookup: &Lookup, slots: usize, budgets: Budgets) -> Option<Product> {
        Self::build_in(
            &[Layer::of(lookup)?],
            &[vec![0]],
            budgets.cell_width(slots),
            &budgets.shapes(),
            usize::MAX,
        )
    }

    /// One product for a table's `main` lookup and its source-port classes' `by_class`
    /// (`None` for a class no slot's source ports include), if every one of them looks at
    /// nothing but the peer address and the ports, within the same budgets; with it, each
    /// class's part. Part 0 answers as `main` alone; the part of class *c* answers as the
    /// lower of `main` and `by_class[c]`. The parts share rows, and columns that agree on
    /// every row are one column, so a class's rules cost columns only where they change a
    /// first slot: one lookup then answers what took two.
    ///
    /// Never in steps: a joint row holds every part's columns, and on the ClassBench lists
    /// only fw1 10k's fit (in 1.9 MiB dense anyway), while trying cost ipc1 10k 0.33 s of its
    /// 0.9 s compile (two more walks over every column update).
    pub(crate) fn build_joint(
        main: &Lookup,
        by_class: &[Option<&Lookup>],
        slots: usize,
        budgets: Budgets,
    ) -> Option<(Product, Box<[u32]>)> {
        let mut layers = vec![Layer::of(main)?];
        let mut parts = vec![vec![0]];
        let mut part_of_class = Vec::with_capacity(by_class.len());
        for lookup in by_class {
            match lookup {
                None => part_of_class.push(0),
                Some(lookup) => {
                    part_of_class.push(parts.len() as u32);
                    parts.push(vec![0, layers.len()]);
                    layers.push(Layer::of(lookup)?);
                }
            }
        }
        let budgets = Budgets {
            steps: 0,
            ..budgets
        };
        let product = Self::build_in(
            &layers,
            &parts,
            budgets.cell_width(slots),
            &budgets.shapes(),
            JOINT_WORK,
        )?;
        Some((product, part_of_class.into()))
    }

    /// The product of `parts` (each a set of `layers` whose lower first slot it answers), in
    /// the first of `shapes` within its limit of bytes if that is the dense or the steps shape,
    /// else in the smallest of the chunked ones within theirs; its cells as `width` allows.
    /// `work` bounds the column updates ([`Inputs::updates`]) that every shape walks (the
    /// steps shape is also bounded by [`STEPS_WORK`]).
    fn build_in(
        layers: &[Layer<'_>],
        parts: &[Vec<usize>],
        width: CellWidth,
        shapes: &[(Shape, usize)],
        work: usize,
    ) -> Option<Product> {
        let inputs = Inputs::of(layers, parts);
        if inputs.updates() > work {
            return None;
        }
        let merged = Merge::hashed(&inputs);
        let (merged, table) = match Table::best(shapes, merged, &inputs, width) {
            Err((Stop::Collision, merged)) => {
                let unmerged = Merge::none(inputs.columns.len(), &merged);
                Table::best(shapes, unmerged, &inputs, width).ok()?
            }
            Err((Stop::Budget | Stop::Unfit, _)) => return None,
            Ok(built) => built,
        };
        let column_of_key = |key: u32| {
            u16::try_from(merged.of_column[key as usize])
                .expect("at most u16::MAX columns, checked by Table::new")
        };
        let parts = inputs
            .parts
            .into_iter()
            .map(|part| PartColumns {
                by_protocol: part
                    .port_keys
                    .into_iter()
                    .map(|(protocol, steps)| {
                        let columns = steps
                            .into_iter()
                            .map(|(start, key)| (start, column_of_key(key)));
                        (protocol, PortTable::new(columns))
                    })
                    .collect(),
                other: u32::from(column_of_key(part.other_key)),
            })
            .collect();
        Some(table.into_product(parts))
    }

    /// The first slot matching `peer` and the port, or `NONE` (part 0: a lookup's product, or
    /// a joint product's main lookup alone).
    #[inline]
    pub(crate) fn first(&self, peer: IpAddr, protocol: Protocol, port: u16) -> u32 {
        self.first_in(0, peer, protocol, port)
    }

    /// The first slot of `part` matching `peer` and the port, or `NONE`. Always inlined:
    /// called from three places, it was left out of line, and a `decide` in a 1k-rule table
    /// took 6 % more instructions (callgrind) than when `first` held the body.
    #[inline(always)]
    pub(crate) fn first_in(&self, part: u32, peer: IpAddr, protocol: Protocol, port: u16) -> u32 {
        let row = match peer {
            IpAddr::V4(a) => self.v4_rows.row_of(a.into()),
            IpAddr::V6(a) => self.v6_rows.class_of(a.into()) as usize,
        };
        let column = self.column(part, protocol, port);
        self.cell(peer, self.chunk(row, column), column)
    }

    /// The stages of [`Product::first`], as [`first_each`] interleaves them: the row's bucket
    /// and window ([`ByStart::bucket`]), the row, the chunk number and the cell; each
    /// `prefetch_*` asks for the line the next stage reads.
    #[inline]
    fn row_bucket(&self, peer: IpAddr) -> Bucket {
        match peer {
            IpAddr::V4(a) => self.v4_rows.bucket(a.into()),
            IpAddr::V6(a) => self.v6_rows.bucket(a.into()),
        }
    }

    #[inline]
    fn prefetch_row_bucket(&self, peer: IpAddr, bucket: Bucket) {
        match peer {
            IpAddr::V4(_) => self.v4_rows.prefetch_bucket(bucket),
            IpAddr::V6(_) => self.v6_rows.prefetch_bucket(bucket),
        }
    }

    #[inline]
    fn row_window(&self, peer: IpAddr, bucket: Bucket) -> Window {
        match peer {
            IpAddr::V4(_) => self.v4_rows.window(bucket),
            IpAddr::V6(_) => self.v6_rows.window(bucket),
        }
    }

    #[inline]
    fn prefetch_row_window(&self, peer: IpAddr, window: Window) {
        match peer {
            IpAddr::V4(_) => self.v4_rows.prefetch_window(window),
            IpAddr::V6(_) => self.v6_rows.prefetch_window(window),
        }
    }

    #[inline]
    fn row_in(&self, peer: IpAddr, window: Window) -> usize {
        match peer {
            IpAddr::V4(a) => self.v4_rows.row_in(a.into(), window),
            IpAddr::V6(a) => self.v6_rows.class_in(a.into(), window) as usize,
        }
    }

    /// Where row `row`'s number of the chunk holding `column` is.
    #[inline]
    fn number_at(&self, row: usize, column: u32) -> usize {
        row * self.chunks_per_row + (column >> self.shift) as usize
    }

    /// Where `column`'s cell of chunk `chunk` is.
    #[inline]
    fn cell_at(&self, chunk: usize, column: u32) -> usize {
        chunk * self.chunk_len + (column & self.mask) as usize
    }

    #[inline]
    fn prefetch_chunk(&self, peer: IpAddr, row: usize, column: u32) {
        match &self.chunk_numbers {
            ChunkNumbers::Dense => self.prefetch_cell(peer, row, column),
            ChunkNumbers::Narrow(numbers) => prefetch_index(numbers, self.number_at(row, column)),
            ChunkNumbers::Wide(numbers) => prefetch_index(numbers, self.number_at(row, column)),
        }
    }

    #[inline]
    fn prefetch_cell(&self, peer: IpAddr, chunk: usize, column: u32) {
        match &self.cells {
            Cells::Flat(cells) => cells.prefetch(self.cell_at(chunk, column)),
            Cells::Steps { v6_records, .. } => {
                prefetch_index(self.records_of(peer, v6_records), chunk)
            }
        }
    }

    /// The steps shape's records of `peer`'s family, indexed by row.
    #[inline]
    fn records_of<'r>(&'r self, peer: IpAddr, v6_records: &'r [RowSteps]) -> &'r [RowSteps] {
        match (peer, &self.v4_rows) {
            (IpAddr::V4(_), V4Rows::Records(records)) => records.items(),
            _ => v6_records,
        }
    }

    #[inline]
    fn column(&self, part: u32, protocol: Protocol, port: u16) -> u32 {
        match part.checked_sub(1) {
            None => &self.first_part,
            Some(other) => &self.other_parts[other as usize],
        }
        .column(protocol, port)
    }

    #[inline]
    fn chunk(&self, row: usize, column: u32) -> usize {
        match &self.chunk_numbers {
            ChunkNumbers::Dense => row,
            ChunkNumbers::Narrow(numbers) => usize::from(numbers[self.number_at(row, column)]),
            ChunkNumbers::Wide(numbers) => numbers[self.number_at(row, column)] as usize,
        }
    }

    #[inline]
    fn cell(&self, peer: IpAddr, chunk: usize, column: u32) -> u32 {
        match &self.cells {
            Cells::Flat(cells) => cells.slot(self.cell_at(chunk, column)),
            Cells::Steps { v6_records, bases } => self.records_of(peer, v6_records)[chunk]
                .slot(column)
                .min(bases.slot(peer, column)),
        }
    }

    /// The product, looked up in stages by [`first_each`] if it takes at least `bytes`.
    pub(crate) fn staged_from(mut self, bytes: usize) -> Product {
        self.staged = self.heap_bytes() >= bytes;
        self
    }

    /// Whether [`first_each`] should look it up in stages.
    pub(crate) fn is_staged(&self) -> bool {
        self.staged
    }

    /// The shape the table was built in.
    pub(crate) fn shape(&self) -> Shape {
        match self.chunk_numbers {
            ChunkNumbers::Dense if matches!(self.cells, Cells::Steps { .. }) => Shape::Steps,
            ChunkNumbers::Dense => Shape::Dense,
            ChunkNumbers::Narrow(_) | ChunkNumbers::Wide(_) => Shape::Chunked { shift: self.shift },
        }
    }

    /// Bytes of cells and chunk numbers: what the budget bounds.
    pub(crate) fn table_bytes(&self) -> usize {
        let cells = match &self.cells {
            Cells::Flat(cells) => cells.heap_bytes(),
            Cells::Steps { v6_records, bases } => {
                let v4_records = match &self.v4_rows {
                    V4Rows::Records(records) => std::mem::size_of_val(records.items()),
                    V4Rows::Numbers(_) => 0,
                };
                v4_records + std::mem::size_of_val(&**v6_records) + bases.heap_bytes()
            }
        };
        let numbers = match &self.chunk_numbers {
            ChunkNumbers::Dense => 0,
            ChunkNumbers::Narrow(n) => n.len() * 2,
            ChunkNumbers::Wide(n) => n.len() * 4,
        };
        cells + numbers
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.table_bytes()
            + self.v4_rows.heap_bytes()
            + self.v6_rows.heap_bytes()
            + std::iter::once(&self.first_part)
                .chain(self.other_parts.iter())
                .map(PartColumns::heap_bytes)
                .sum::<usize>()
    }
}

/// How many lookups [`first_each`] interleaves at most.
pub(crate) const STAGED: usize = 16;

/// One lookup of a product, for [`first_each`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Staged<'a> {
    pub(crate) product: &'a Product,
    pub(crate) part: u32,
    pub(crate) peer: IpAddr,
    pub(crate) protocol: Protocol,
    pub(crate) port: u16,
}

/// [`Product::first`] of each of `lookups` (at most [`STAGED`]) into `firsts`, one stage at a
/// time across all of them: each stage reads what the one before asked for and asks for the
/// line the next one reads. In a table larger than the caches every stage's load misses; one
/// lookup after another, each miss waits for the one before it, while here the misses of a
/// stage are in flight together.
pub(crate) fn first_each(lookups: &[Staged<'_>], firsts: &mut [u32]) {
    let n = lookups.len();
    assert!(
        n <= STAGED && firsts.len() == n,
        "at most {STAGED} lookups, one answer each"
    );
    let mut buckets = [Bucket::default(); STAGED];
    for (bucket, l) in buckets.iter_mut().zip(lookups) {
        *bucket = l.product.row_bucket(l.peer);
        l.product.prefetch_row_bucket(l.peer, *bucket);
    }
    let mut windows = [Window::default(); STAGED];
    for ((window, bucket), l) in windows.iter_mut().zip(&buckets).zip(lookups) {
        *window = l.product.row_window(l.peer, *bucket);
        l.product.prefetch_row_window(l.peer, *window);
    }
    let mut rows = [0usize; STAGED];
    let mut columns = [0u32; STAGED];
    for (i, l) in lookups.iter().enumerate() {
        rows[i] = l.product.row_in(l.peer, windows[i]);
        columns[i] = l.product.column(l.part, l.protocol, l.port);
        l.product.prefetch_chunk(l.peer, rows[i], columns[i]);
    }
    let mut chunks = [0usize; STAGED];
    for (i, l) in lookups.iter().enumerate() {
        chunks[i] = l.product.chunk(rows[i], columns[i]);
        l.product.prefetch_cell(l.peer, chunks[i], columns[i]);
    }
    for (i, l) in lookups.iter().enumerate() {
        firsts[i] = l.product.cell(l.peer, chunks[i], columns[i]);
    }
}

/// What every shape is built from: the provisional columns, for each part which provisional
/// column each port of each protocol falls in, and the address maps of both families.
struct Inputs {
    columns: Vec<Column>,
    /// Source → the provisional columns it feeds (by number).
    columns_of_source: Vec<Vec<u32>>,
    parts: Vec<PartKeys>,
    v4: Family<u32>,
    v6: Family<u128>,
}

/// One part's ports: per protocol with ports of its own, steps from port 0 to provisional
/// columns; and the provisional column of every other protocol.
struct PartKeys {
    port_keys: Vec<(Protocol, Vec<(u32, u32)>)>,
    other_key: u32,
}

/// The sources (port classes, see [`Layer`]) whose lowest first slot a provisional column
/// takes: at most two per layer, and a part has at most two layers.
type Sources = ArrayVec<usize, 4>;

/// One lookup's port classes and wide classes (its *sources*), and which of them each port of
/// each protocol looks at.
struct Layer<'a> {
    sources: Vec<&'a PortClass>,
    /// Per protocol the lookup names: steps from port 0, each with its sources.
    ports: Vec<(Protocol, Vec<(u32, Sources)>)>,
    /// The sources of every protocol the lookup does not name, as one step from port 0.
    other: [(u32, Sources); 1],
}

impl<'a> Layer<'a> {
    /// `None` if a slot of `lookup` looks at more than the peer address and the ports.
    fn of(lookup: &'a Lookup) -> Option<Layer<'a>> {
        let (port_map, port_classes) = &lookup.ports;
        let wide: Vec<&PortClass> = lookup.wide.iter().flat_map(|w| w.classes()).collect();
        if !lookup.mixed.is_empty()
            || port_classes
                .iter()
                .chain(wide.iter().copied())
                .any(|c| c.pods.is_some())
        {
            return None;
        }
        // A port looks at its port class and at the wide class of its protocol, if any.
        let wide_of = |protocol: Option<Protocol>| -> Option<usize> {
            let by_protocol = lookup.wide.as_ref()?;
            protocol
                .and_then(|p| by_protocol.by_protocol.iter().position(|(q, _)| *q == p))
                .or(by_protocol
                    .other
                    .as_ref()
                    .map(|_| by_protocol.by_protocol.len()))
        };
        let sources_of = |class: u32, wide: Option<usize>| -> Sources {
            std::iter::once(class as usize)
                .chain(wide.map(|w| port_classes.len() + w))
                .collect()
        };
        let mut protocols: Vec<Protocol> = port_map
            .protocols()
            .map(|(p, _)| p)
            .chain(
                lookup
                    .wide
                    .iter()
                    .flat_map(|w| w.by_protocol.iter().map(|(p, _)| *p)),
            )
            .collect();
        protocols.sort_unstable();
        protocols.dedup();
        let ports = protocols
            .into_iter()
            .map(|protocol| {
                let w = wide_of(Some(protocol));
                let steps = match port_map.protocols().find(|(p, _)| *p == protocol) {
                    Some((_, ports)) => ports
                        .steps()
                        .map(|(start, class)| (start, sources_of(class, w)))
                        .collect(),
                    None => vec![(0, sources_of(port_map.other(), w))],
                };
                (protocol, steps)
            })
            .collect();
        Some(Layer {
            sources: port_classes.iter().chain(wide).collect(),
            ports,
            other: [(0, sources_of(port_map.other(), wide_of(None)))],
        })
    }

    /// The steps of `protocol`'s ports.
    fn steps(&self, protocol: Protocol) -> &[(u32, Sources)] {
        self.ports
            .iter()
            .find(|(p, _)| *p == protocol)
            .map_or(&self.other, |(_, steps)| steps)
    }
}

impl Inputs {
    /// At most how many times a walk ([`Family::walk`]) folds a provisional column again: for
    /// each step of a source's map, the columns that source feeds.
    fn updates(&self) -> usize {
        self.v4.updates(&self.columns_of_source) + self.v6.updates(&self.columns_of_source)
    }

    /// The inputs of `parts`, each the layers whose lower first slot it answers.
    fn of(layers: &[Layer<'_>], parts: &[Vec<usize>]) -> Inputs {
        // Sources are numbered across layers.
        let offsets: Vec<usize> = layers
            .iter()
            .scan(0, |next, layer| {
                let offset = *next;
                *next += layer.sources.len();
                Some(offset)
            })
            .collect();
        let mut keys: Interner<Sources> = Interner::default();
        let mut key_of = |members: &mut dyn Iterator<Item = (usize, &Sources)>| -> u32 {
            let mut sources: Sources = ArrayVec::new();
            for (layer, local) in members {
                sources.extend(local.iter().map(|&s| offsets[layer] + s));
            }
            sources.sort_unstable();
            keys.intern(sources)
        };
        let parts = parts
            .iter()
            .map(|members| {
                let mut protocols: Vec<Protocol> = members
                    .iter()
                    .flat_map(|&l| layers[l].ports.iter().map(|(p, _)| *p))
                    .collect();
                protocols.sort_unstable();
                protocols.dedup();
                let port_keys = protocols
                    .into_iter()
                    .map(|protocol| {
                        // Every port where any layer's step starts, with each layer's sources.
                        let steps: Vec<&[(u32, Sources)]> =
                            members.iter().map(|&l| layers[l].steps(protocol)).collect();
                        let mut starts: Vec<u32> = steps
                            .iter()
                            .flat_map(|s| s.iter().map(|&(p, _)| p))
                            .collect();
                        starts.sort_unstable();
                        starts.dedup();
                        let mut at = vec![0usize; steps.len()];
                        let refined = starts
                            .into_iter()
                            .map(|start| {
                                let mut live = members
                                    .iter()
                                    .zip(&steps)
                                    .zip(at.iter_mut())
                                    .map(|((&l, steps), at)| (l, step_at(steps, at, start)));
                                (start, key_of(&mut live))
                            })
                            .collect();
                        (protocol, refined)
                    })
                    .collect();
                let other_key = key_of(&mut members.iter().map(|&l| (l, &layers[l].other[0].1)));
                PartKeys {
                    port_keys,
                    other_key,
                }
            })
            .collect();

        let sources: Vec<&PortClass> = layers
            .iter()
            .flat_map(|l| l.sources.iter().copied())
            .collect();
        let columns: Vec<Column> = keys
            .into_values()
            .into_iter()
            .map(|sources_of_column| Column {
                any_peer: sources_of_column
                    .iter()
                    .map(|&s| sources[s].any_peer)
                    .min()
                    .unwrap_or(NONE),
                sources: sources_of_column,
            })
            .collect();
        let v4: Vec<_> = sources
            .iter()
            .map(|s| s.addresses.as_ref().map(|a| a.map.v4()))
            .collect();
        let v6: Vec<_> = sources
            .iter()
            .map(|s| s.addresses.as_ref().map(|a| a.map.v6()))
            .collect();
        let (v4, v6) = (Family::new(&v4), Family::new(&v6));
        let mut columns_of_source: Vec<Vec<u32>> = vec![Vec::new(); sources.len()];
        for (k, column) in columns.iter().enumerate() {
            for &source in &column.sources {
                columns_of_source[source].push(k as u32);
            }
        }
        Inputs {
            columns,
            columns_of_source,
            parts,
            v4,
            v6,
        }
    }
}

/// The value of the step of `steps` (sorted by start, the first at or below every key asked)
/// that holds `key`, moving `at` forward to it: walked with rising keys, each list is read
/// once.
fn step_at<'s, K: Copy + Ord, V>(steps: &'s [(K, V)], at: &mut usize, key: K) -> &'s V {
    while *at + 1 < steps.len() && steps[*at + 1].0 <= key {
        *at += 1;
    }
    &steps[*at].1
}

/// A provisional column: the first slot at an address is the lowest of its sources' (port
/// classes') first slots there and `any_peer`.
struct Column {
    sources: Sources,
    any_peer: u32,
}

/// A 64-bit hash of `x` (the finalizer of SplitMix64).
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Why a table was not built.
#[derive(Debug)]
enum Stop {
    /// Past the budget.
    Budget,
    /// A row does not fit the shape (more steps than [`RowSteps::MAX`], or too many columns).
    Unfit,
    /// Two provisional columns hashed alike but differ: build again without merging.
    Collision,
}

/// One address family's maps, as the changes they make: every step of every source's map
/// (none for a source without an address condition, which contributes only its `any_peer`),
/// ordered by start.
struct Family<K> {
    /// (start, source, first slot from there on), by start.
    changes: Vec<(K, u32, u32)>,
    /// How many distinct starts there are, `K::MIN` always among them.
    starts: usize,
}

impl<K: Key> Family<K> {
    fn new(maps: &[Option<&Intervals<K>>]) -> Self {
        let mut changes: Vec<(K, u32, u32)> = maps
            .iter()
            .enumerate()
            .filter_map(|(source, m)| Some((source as u32, (*m)?)))
            .flat_map(|(source, m)| m.steps().map(move |(start, slot)| (start, source, slot)))
            .collect();
        changes.sort_unstable_by_key(|&(start, source, _)| (start, source));
        let first = changes.first().map(|&(start, _, _)| start);
        let starts = usize::from(first != Some(K::MIN))
            + usize::from(first.is_some())
            + changes.windows(2).filter(|w| w[0].0 != w[1].0).count();
        Family { changes, starts }
    }

    /// How many column updates a walk makes, given the columns each source feeds.
    fn updates(&self, columns_of_source: &[Vec<u32>]) -> usize {
        self.changes
            .iter()
            .map(|&(_, source, _)| columns_of_source[source as usize].len())
            .sum()
    }

    /// Calls `visit` at each start with the first slot of every provisional column there, and
    /// the columns whose slot differs from the previous start's (at the first start, all of
    /// them). A start costs only its changes: a source's step reaches just the columns it
    /// feeds, and those alone are folded again.
    fn walk(
        &self,
        columns: &[Column],
        columns_of_source: &[Vec<u32>],
        mut visit: impl FnMut(K, &[u32], &[u32]) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        let mut value = vec![NONE; columns_of_source.len()];
        let fold = |column: &Column, value: &[u32]| {
            column
                .sources
                .iter()
                .map(|&s| value[s])
                .fold(column.any_peer, u32::min)
        };
        let mut row: Vec<u32> = columns.iter().map(|c| fold(c, &value)).collect();
        // `touched[k]` is the number of the start that last queued column `k` for folding.
        let mut touched = vec![usize::MAX; columns.len()];
        let mut queued: Vec<u32> = Vec::new();
        let mut changed: Vec<u32> = Vec::new();
        let mut rest = &self.changes[..];
        let mut start = K::MIN;
        for number in 0..self.starts {
            let here = rest.partition_point(|&(at, _, _)| at == start);
            for &(_, source, slot) in &rest[..here] {
                let source = source as usize;
                if std::mem::replace(&mut value[source], slot) == slot {
                    continue;
                }
                for &k in &columns_of_source[source] {
                    if std::mem::replace(&mut touched[k as usize], number) != number {
                        queued.push(k);
                    }
                }
            }
            rest = &rest[here..];
            changed.clear();
            if number == 0 {
                changed.extend(0..columns.len() as u32);
            }
            for k in queued.drain(..) {
                let slot = fold(&columns[k as usize], &value);
                if std::mem::replace(&mut row[k as usize], slot) != slot && number != 0 {
                    changed.push(k);
                }
            }
            visit(start, &row, &changed)?;
            if let Some(&(next, _, _)) = rest.first() {
                start = next;
            }
        }
        debug_assert!(rest.is_empty(), "every change applied");
        Ok(())
    }
}

/// Provisional columns that agree on every row share one column of the table.
struct Merge {
    /// Provisional column → column of the table.
    of_column: Vec<u32>,
    /// Column of the table → the provisional columns merged into it, in order.
    members: Vec<Vec<u32>>,
    width: usize,
    /// At most the number of distinct rows (see [`Merge::hashed`]): what every shape must
    /// store at least, so that a shape past its limit by that alone is not walked.
    rows_at_least: usize,
}

impl Merge {
    /// Columns merged where their slots over all starts hash alike; [`Table::new`] checks
    /// every merge against the slots themselves, so a collision is caught, not believed.
    ///
    /// The columns are numbered from the steadiest (fewest changes of slot from one start to
    /// the next) to the most changing, so that the chunks of steady columns repeat from row
    /// to row and the chunked shape stores them once.
    fn hashed(inputs: &Inputs) -> Merge {
        let (columns, of_source) = (&inputs.columns, &inputs.columns_of_source);
        let (v4, v6) = (&inputs.v4, &inputs.v6);
        let mut hashes = vec![0u64; columns.len()];
        let mut changes = vec![0usize; columns.len()];
        let mut previous = vec![NONE; columns.len()];
        // Columns alike at every start change alike: each change is hashed with the number
        // of its start.
        let mut number = 0u64;
        // Rows alike hash alike: the hash of a row is the XOR of its cells' hashes, kept up
        // to date change by change. Rows that differ may collide, so the count of distinct
        // hashes is at most the count of distinct rows.
        let cell_hash = |k: usize, slot: u32| mix64(((k as u64) << 32) | u64::from(slot));
        let mut row_hash = (0..columns.len()).fold(0, |h, k| h ^ cell_hash(k, NONE));
        let mut row_hashes: ahash::AHashSet<u64> = ahash::AHashSet::new();
        let mut mix = |row: &[u32], changed: &[u32]| {
            for &k in changed {
                let (k, slot) = (k as usize, row[k as usize]);
                for word in [number, u64::from(slot)] {
                    hashes[k] =
                        (hashes[k].rotate_left(23) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                }
                row_hash ^= cell_hash(k, previous[k]) ^ cell_hash(k, slot);
                changes[k] += usize::from(previous[k] != slot);
                previous[k] = slot;
            }
            row_hashes.insert(row_hash);
            number += 1;
            Ok(())
        };
        let walked = v4
            .walk(columns, of_source, |_, row, changed| mix(row, changed))
            .and_then(|()| v6.walk(columns, of_source, |_, row, changed| mix(row, changed)));
        debug_assert!(walked.is_ok(), "hashing never stops");
        let rows_at_least = row_hashes.len();
        let mut ids: Interner<u64> = Interner::default();
        let by_hash = Self::from_ids(hashes.into_iter().map(|h| ids.intern(h)).collect());
        let mut order: Vec<u32> = (0..by_hash.width as u32).collect();
        order.sort_by_key(|&m| (changes[by_hash.members[m as usize][0] as usize], m));
        let mut rank = vec![0u32; order.len()];
        for (r, &m) in order.iter().enumerate() {
            rank[m as usize] = r as u32;
        }
        Merge {
            rows_at_least,
            ..Self::from_ids(
                by_hash
                    .of_column
                    .into_iter()
                    .map(|m| rank[m as usize])
                    .collect(),
            )
        }
    }

    /// No columns merged, for the retry after a collision; the rows as `merge` counted them
    /// (merging does not change how many distinct rows there are).
    fn none(columns: usize, merge: &Merge) -> Merge {
        Merge {
            rows_at_least: merge.rows_at_least,
            ..Self::from_ids((0..columns as u32).collect())
        }
    }

    /// The fewest bytes `shape` can take with cells as `cells` allows: a cell
    /// per column of each distinct row if dense; a record, a base and the blocks' base numbers
    /// in steps; else a chunk number (at least two bytes) per chunk of each distinct row, and
    /// one chunk of cells (at least two bytes each).
    ///
    /// A dense cell counts four bytes past `u16::MAX` slots, though ranks may keep it in two
    /// ([`CellSlots`]): how many distinct slots the cells hold is known only once they are
    /// built, and a dense table that outgrows its limit costs a whole build (ipc1's 100k-rule
    /// tables, in steps, would each take 0.2 s more to find their dense table too big).
    fn bytes_at_least(&self, shape: Shape, cells: CellWidth) -> usize {
        let width = self.width.max(1);
        let cell_bytes = if cells.slots_in_two_bytes() { 2 } else { 4 };
        match shape {
            Shape::Dense => self.rows_at_least.saturating_mul(width * cell_bytes),
            // Rows over different bases may share a record: one record at least, one base and
            // the blocks' base numbers.
            Shape::Steps => std::mem::size_of::<RowSteps>() + width * 4 + (2 << BLOCK_BITS) * 2,
            Shape::Chunked { shift } => {
                let chunk_len = 1 << shift;
                let numbers = self
                    .rows_at_least
                    .saturating_mul(width.div_ceil(chunk_len) * 2);
                numbers.saturating_add(chunk_len * 2)
            }
        }
    }

    /// The same merge, its columns numbered in the order the ports first reach them (each
    /// part's protocols in order, their ports from 0, then the other protocols): a rule over a
    /// range of ports then covers a range of columns, and a row changes slot at few columns.
    fn in_port_order(&self, inputs: &Inputs) -> Merge {
        const UNNUMBERED: u32 = u32::MAX;
        let mut number = vec![UNNUMBERED; self.width];
        let mut next = 0u32;
        let keys = inputs.parts.iter().flat_map(|part| {
            part.port_keys
                .iter()
                .flat_map(|(_, steps)| steps.iter().map(|&(_, key)| key))
                .chain(std::iter::once(part.other_key))
        });
        for key in keys.chain(0..inputs.columns.len() as u32) {
            let column = &mut number[self.of_column[key as usize] as usize];
            if *column == UNNUMBERED {
                *column = next;
                next += 1;
            }
        }
        Merge {
            rows_at_least: self.rows_at_least,
            ..Self::from_ids(self.of_column.iter().map(|&m| number[m as usize]).collect())
        }
    }

    fn from_ids(of_column: Vec<u32>) -> Merge {
        let width = of_column.iter().max().map_or(0, |&m| m as usize + 1);
        let mut members = vec![Vec::new(); width];
        for (k, &m) in of_column.iter().enumerate() {
            members[m as usize].push(k as u32);
        }
        Merge {
            of_column,
            members,
            width,
            rows_at_least: 1,
        }
    }
}

/// Where a row begins in a block of addresses, for the steps shape ([`Table::walk_blocks`]).
struct Piece<'r, K> {
    start: K,
    /// A slot per column of the table.
    row: &'r [u32],
    block: usize,
    /// The columns set since the block's previous piece (`None`: the block's first piece, or
    /// a piece begun by the block's first address).
    changed: Option<&'r [usize]>,
}

impl<'r, K> Piece<'r, K> {
    fn entering(start: K, row: &'r [u32], block: usize) -> Self {
        Piece {
            start,
            row,
            block,
            changed: None,
        }
    }
}

/// A table's row (its columns, merged), kept from start to start by a walk's changes.
struct MergedRow<'m> {
    merge: &'m Merge,
    /// One slot per column of the table (and `NONE` in the padding of a chunked row).
    slots: Vec<u32>,
    checked: Vec<usize>,
    visits: usize,
}

impl<'m> MergedRow<'m> {
    fn new(merge: &'m Merge, len: usize) -> Self {
        MergedRow {
            merge,
            slots: vec![NONE; len],
            checked: vec![usize::MAX; merge.width],
            visits: 0,
        }
    }

    /// Takes a start's `changed` provisional columns from `row`, calling `set(column, visit)`
    /// for each column of the table set (`visit` numbers the starts); a merge of columns that
    /// differ here is a collision.
    fn update(
        &mut self,
        row: &[u32],
        changed: &[u32],
        mut set: impl FnMut(usize, usize),
    ) -> Result<(), Stop> {
        let (merge, visit) = (self.merge, self.visits);
        self.visits += 1;
        for &k in changed {
            let m = merge.of_column[k as usize] as usize;
            if merge.members[m][0] == k {
                self.slots[m] = row[k as usize];
                set(m, visit);
            }
        }
        // A merge holds while its columns change together and alike.
        for &k in changed {
            let m = merge.of_column[k as usize] as usize;
            if std::mem::replace(&mut self.checked[m], visit) != visit
                && merge.members[m]
                    .iter()
                    .any(|&j| row[j as usize] != self.slots[m])
            {
                return Err(Stop::Collision);
            }
        }
        Ok(())
    }
}

/// Distinct runs of `len` numbers, kept flat and numbered in order of first appearance.
struct Runs {
    len: usize,
    flat: Vec<u32>,
    /// The numbers of the runs, found by the hash of their cells in `flat`.
    numbers: hashbrown::HashTable<u32>,
    hasher: ahash::RandomState,
}

impl Runs {
    fn new(len: usize) -> Runs {
        Runs {
            len,
            flat: Vec::new(),
            numbers: hashbrown::HashTable::new(),
            hasher: ahash::RandomState::new(),
        }
    }

    fn count(&self) -> usize {
        self.flat.len() / self.len
    }

    /// The number of `run`, and whether it is new (then it is stored).
    fn number(&mut self, run: &[u32]) -> (u32, bool) {
        let hash = self.hasher.hash_one(run);
        let (flat, len, hasher) = (&self.flat, self.len, &self.hasher);
        let at = |number: u32| &flat[number as usize * len..][..len];
        match self
            .numbers
            .entry(hash, |&n| at(n) == run, |&n| hasher.hash_one(at(n)))
        {
            hashbrown::hash_table::Entry::Occupied(entry) => (*entry.get(), false),
            hashbrown::hash_table::Entry::Vacant(entry) => {
                let number = (flat.len() / len) as u32;
                entry.insert(number);
                self.flat.extend_from_slice(run);
                (number, true)
            }
        }
    }
}

/// Distinct chunks and rows, built start by start within a limit of bytes. Chunks are
/// numbered over all positions in the row: the same run of slots recurs at many positions
/// (a rule over a range of ports shared by several columns), and acl1 at 100k rules has
/// 2.3 times as many chunks when each position numbers its own.
struct Table {
    shape: Shape,
    /// The steps shape's bases (see [`BlockBases`]).
    bases: Option<BlockBases>,
    /// Columns per chunk (dense and steps: the row's width).
    chunk_len: usize,
    /// The distinct chunks: their cells (in the steps shape, the distinct records' words).
    chunks: Runs,
    /// The distinct rows: their chunk numbers (chunked shapes only).
    rows: Runs,
    v4_steps: Vec<(u32, u32)>,
    v6_steps: Vec<(u128, u32)>,
    /// In the steps shape, once the steps are known: how many records the product keeps
    /// (see [`V4Rows::Records`]); until then, the distinct records are the fewest it can.
    steps_records: usize,
    /// The slots in the cells so far (dense and chunked shapes): they decide a cell's width.
    cell_slots: CellSlots,
    limit: usize,
}

impl Table {
    /// The table in the first of `shapes` within its limit if that is the dense or the steps
    /// shape, else the smallest within its limit, its cells as `width` allows; with `merge` as
    /// the table numbers its columns (in port order for the steps shape). `merge` comes back
    /// with the reason when no table is built.
    fn best(
        shapes: &[(Shape, usize)],
        merge: Merge,
        inputs: &Inputs,
        width: CellWidth,
    ) -> Result<(Merge, Table), (Stop, Merge)> {
        let mut ported: Option<Merge> = None;
        let mut best: Option<Table> = None;
        for &(shape, limit) in shapes {
            let limit = best
                .as_ref()
                .map_or(limit, |b| limit.min(b.bytes().saturating_sub(1)));
            if merge.bytes_at_least(shape, width) > limit {
                continue;
            }
            let numbered = match shape {
                Shape::Steps => ported.get_or_insert_with(|| merge.in_port_order(inputs)),
                _ => &merge,
            };
            match Table::new(shape, numbered, inputs, width, limit) {
                Ok(table) if shape == Shape::Steps => {
                    return Ok((ported.expect("numbered in port order"), table))
                }
                Ok(table) if shape == Shape::Dense => return Ok((merge, table)),
                Ok(table) => best = Some(table),
                Err(Stop::Budget | Stop::Unfit) => {}
                Err(Stop::Collision) => return Err((Stop::Collision, merge)),
            }
        }
        match best {
            Some(table) => Ok((merge, table)),
            None => Err((Stop::Budget, merge)),
        }
    }

    fn new(
        shape: Shape,
        merge: &Merge,
        inputs: &Inputs,
        cell_width: CellWidth,
        limit: usize,
    ) -> Result<Table, Stop> {
        if merge.width > usize::from(u16::MAX) {
            // Port tables hold `u16` columns; so many port classes are past any budget anyway.
            return Err(Stop::Budget);
        }
        let width = merge.width.max(1);
        let chunk_len = match shape {
            Shape::Dense | Shape::Steps => width,
            Shape::Chunked { shift } => 1 << shift,
        };
        let chunks_per_row = width.div_ceil(chunk_len);
        let mut table = Table {
            shape,
            chunk_len,
            chunks: Runs::new(match shape {
                Shape::Steps => RowSteps::WORDS,
                _ => chunk_len,
            }),
            rows: Runs::new(chunks_per_row),
            v4_steps: Vec::new(),
            v6_steps: Vec::new(),
            steps_records: 0,
            bases: None,
            cell_slots: CellSlots::new(cell_width),
            limit,
        };
        if shape == Shape::Steps {
            table.fill_steps(merge, inputs)?;
        } else {
            table.fill_chunks(merge, inputs)?;
        }
        Ok(table)
    }

    /// The rows of a dense or chunked table, start by start.
    fn fill_chunks(&mut self, merge: &Merge, inputs: &Inputs) -> Result<(), Stop> {
        let (columns, of_source) = (&inputs.columns, &inputs.columns_of_source);
        let chunk_len = self.chunk_len;
        let chunks_per_row = self.rows.len;
        self.v4_steps.reserve(inputs.v4.starts);
        self.v6_steps.reserve(inputs.v6.starts);
        // The row kept from start to start, changed only where columns change, so that a
        // start costs its changes: chunks no change reached keep their numbers, unhashed.
        let mut kept = MergedRow::new(merge, chunks_per_row * chunk_len);
        let mut numbers = vec![0u32; chunks_per_row];
        let mut stale = vec![usize::MAX; chunks_per_row];
        let mut stale_positions: Vec<usize> = Vec::new();
        let mut last_row: Option<u32> = None;
        let mut row_id = |table: &mut Table, row: &[u32], changed: &[u32]| -> Result<u32, Stop> {
            kept.update(row, changed, |column, visit| {
                let position = column / chunk_len;
                if std::mem::replace(&mut stale[position], visit) != visit {
                    stale_positions.push(position);
                }
            })?;
            match last_row {
                Some(id) if stale_positions.is_empty() => return Ok(id),
                // The first row: every chunk, padding-only ones too.
                None => stale_positions = (0..chunks_per_row).collect(),
                Some(_) => {}
            }
            for position in stale_positions.drain(..) {
                numbers[position] =
                    table.chunk(&kept.slots[position * chunk_len..][..chunk_len])?;
            }
            let id = table.row(&numbers)?;
            last_row = Some(id);
            Ok(id)
        };
        inputs.v4.walk(columns, of_source, |start, row, changed| {
            let id = row_id(self, row, changed)?;
            self.v4_steps.push((start, id));
            Ok(())
        })?;
        inputs.v6.walk(columns, of_source, |start, row, changed| {
            let id = row_id(self, row, changed)?;
            self.v6_steps.push((start, id));
            Ok(())
        })
    }

    /// The records of a steps table: first each block's base, then each row's steps over
    /// the base of every block it reaches (a row's interval is cut where a block begins).
    fn fill_steps(&mut self, merge: &Merge, inputs: &Inputs) -> Result<(), Stop> {
        let width = self.chunk_len;
        let starts = inputs.v4.starts + inputs.v6.starts + (2 << BLOCK_BITS);
        if width > usize::from(RowSteps::UNUSED) || starts.saturating_mul(width) > STEPS_WORK {
            return Err(Stop::Unfit);
        }
        let v4 = Self::block_maxima(&inputs.v4, merge, inputs, width)?;
        let v6 = Self::block_maxima(&inputs.v6, merge, inputs, width)?;
        let mut bases: Interner<&[u32]> = Interner::default();
        let [v4_bases, v6_bases] = [&v4, &v6].map(|maxima| {
            maxima
                .iter()
                .map(|base| u16::try_from(bases.intern(base)).expect("at most 512 bases"))
                .collect::<Box<[u16]>>()
        });
        self.bases = Some(BlockBases {
            v4: v4_bases,
            v6: v6_bases,
            width,
            slots: bases.values().concat().into(),
        });
        if self.bytes() > self.limit {
            return Err(Stop::Budget);
        }
        self.v4_steps = self.steps_over(&inputs.v4, merge, inputs, &v4)?;
        self.v6_steps = self.steps_over(&inputs.v6, merge, inputs, &v6)?;
        let v4_records = v4_record_count(&self.v4_steps);
        let mut v6_rows: Vec<u32> = self.v6_steps.iter().map(|&(_, row)| row).collect();
        v6_rows.sort_unstable();
        v6_rows.dedup();
        self.steps_records = v4_records + v6_rows.len();
        if self.bytes() > self.limit {
            return Err(Stop::Budget);
        }
        Ok(())
    }

    /// For each block of `family`'s addresses, the highest slot of each column over the rows
    /// in it. A row costs the columns that changed since the block's previous row, and a
    /// block all of its columns once.
    fn block_maxima<K: Key>(
        family: &Family<K>,
        merge: &Merge,
        inputs: &Inputs,
        width: usize,
    ) -> Result<Vec<Vec<u32>>, Stop> {
        let mut maxima = vec![vec![0u32; width]; 1 << BLOCK_BITS];
        Self::walk_blocks(family, merge, inputs, width, |piece: Piece<'_, K>| {
            let base = &mut maxima[piece.block];
            let mut fold = |column: usize| base[column] = base[column].max(piece.row[column]);
            match piece.changed {
                None => (0..width).for_each(&mut fold),
                Some(columns) => columns.iter().copied().for_each(fold),
            }
            Ok(())
        })?;
        Ok(maxima)
    }

    /// `family`'s steps from address to record: a row's record over its block's base, at
    /// each start and at each block's first address. A start that changed no column of the
    /// table keeps the record before it.
    fn steps_over<K: Key>(
        &mut self,
        family: &Family<K>,
        merge: &Merge,
        inputs: &Inputs,
        bases: &[Vec<u32>],
    ) -> Result<Vec<(K, u32)>, Stop> {
        let mut steps = Vec::with_capacity(family.starts);
        let mut last = 0;
        Self::walk_blocks(family, merge, inputs, self.chunk_len, |piece| {
            if piece.changed.is_none_or(|columns| !columns.is_empty()) {
                let base = &bases[piece.block];
                let words = RowSteps::words_over(piece.row, base).ok_or(Stop::Unfit)?;
                last = self.chunk(&words)?;
            }
            steps.push((piece.start, last));
            Ok(())
        })?;
        Ok(steps)
    }

    /// Walks `family`'s rows (merged, `width` columns) cut where a block of addresses begins:
    /// `visit` at each start, and at each block's first address that falls inside a row
    /// begun before it.
    fn walk_blocks<K: Key>(
        family: &Family<K>,
        merge: &Merge,
        inputs: &Inputs,
        width: usize,
        mut visit: impl FnMut(Piece<'_, K>) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        let mut kept = MergedRow::new(merge, width);
        let mut set: Vec<usize> = Vec::new();
        // The first block whose first address has not been visited.
        let mut reached = 0;
        family.walk(
            &inputs.columns,
            &inputs.columns_of_source,
            |start, row, changed| {
                let block = block_of(start);
                while reached <= block && block_start::<K>(reached) < start {
                    visit(Piece::entering(block_start(reached), &kept.slots, reached))?;
                    reached += 1;
                }
                set.clear();
                kept.update(row, changed, |column, _| set.push(column))?;
                visit(Piece {
                    start,
                    row: &kept.slots,
                    block,
                    // Past this block's first address already: a piece after another in it.
                    changed: (reached > block).then_some(&set[..]),
                })?;
                reached = block + 1;
                Ok(())
            },
        )?;
        for block in reached..1 << BLOCK_BITS {
            visit(Piece::entering(block_start(block), &kept.slots, block))?;
        }
        Ok(())
    }

    fn number_bytes(&self) -> usize {
        match self.shape {
            Shape::Dense | Shape::Steps => 0,
            Shape::Chunked { .. } if self.chunks.count() <= 1 << 16 => 2,
            Shape::Chunked { .. } => 4,
        }
    }

    fn bytes(&self) -> usize {
        let cells = match self.shape {
            Shape::Steps => {
                self.chunks.count().max(self.steps_records) * std::mem::size_of::<RowSteps>()
            }
            _ => {
                self.chunks.flat.len() * self.cell_slots.cell_bytes() + self.cell_slots.rank_bytes()
            }
        };
        let bases = self.bases.as_ref().map_or(0, BlockBases::heap_bytes);
        cells + bases + self.rows.flat.len() * self.number_bytes()
    }

    fn chunk(&mut self, chunk: &[u32]) -> Result<u32, Stop> {
        let (number, new) = self.chunks.number(chunk);
        if new && self.shape != Shape::Steps {
            self.cell_slots.add(chunk);
        }
        self.within_limit(new, number)
    }

    /// The row made of these chunks (dense and steps: the one chunk is the row).
    fn row(&mut self, numbers: &[u32]) -> Result<u32, Stop> {
        if matches!(self.shape, Shape::Dense | Shape::Steps) {
            return Ok(numbers[0]);
        }
        let (id, new) = self.rows.number(numbers);
        self.within_limit(new, id)
    }

    /// `number`, unless something new made the table outgrow its limit.
    fn within_limit(&self, new: bool, number: u32) -> Result<u32, Stop> {
        if new && self.bytes() > self.limit {
            return Err(Stop::Budget);
        }
        Ok(number)
    }

    /// The product with `parts`' columns (at least one part).
    fn into_product(mut self, parts: Vec<PartColumns>) -> Product {
        let mut parts = parts.into_iter();
        let first_part = parts.next().expect("every product has part 0");
        let (shift, mask) = match self.shape {
            // Unused (a dense or steps row has no chunk numbers); the mask keeps the whole
            // column.
            Shape::Dense | Shape::Steps => (16, u32::MAX),
            Shape::Chunked { shift } => (shift, (1 << shift) - 1),
        };
        let chunk_numbers = match (self.shape, self.number_bytes()) {
            (Shape::Dense | Shape::Steps, _) => ChunkNumbers::Dense,
            (_, 2) => ChunkNumbers::Narrow(
                self.rows
                    .flat
                    .iter()
                    .map(|&n| u16::try_from(n).expect("at most 2^16 chunks"))
                    .collect(),
            ),
            _ => ChunkNumbers::Wide(std::mem::take(&mut self.rows.flat).into_boxed_slice()),
        };
        let cells = std::mem::take(&mut self.chunks.flat).into_iter();
        let (cells, v4_rows, v6_steps) = if let Some(bases) = self.bases.take() {
            let words: Vec<u32> = cells.collect();
            let records: Vec<RowSteps> = words
                .chunks_exact(RowSteps::WORDS)
                .map(RowSteps::from_words)
                .collect();
            let v4_records = v4_records(&self.v4_steps, &records);
            let (v6_steps, v6_records) = v6_records(&self.v6_steps, &records);
            let cells = Cells::Steps {
                v6_records: v6_records.into(),
                bases,
            };
            (cells, V4Rows::Records(ByStart::new(v4_records)), v6_steps)
        } else {
            let cells = Cells::Flat(self.cell_slots.cells(cells));
            let v4_rows = V4Rows::Numbers(Intervals::from_steps(self.v4_steps));
            (cells, v4_rows, self.v6_steps)
        };
        Product {
            v4_rows,
            v6_rows: Intervals::from_steps(v6_steps),
            first_part,
            other_parts: parts.collect(),
            chunk_len: self.chunk_len,
            chunks_per_row: self.rows.len,
            shift,
            mask,
            chunk_numbers,
            cells,
            staged: false,
        }
    }
}

/// How a dense or chunked table may keep its cells: its lookups' slots are numbered below
/// `slots`, and it keeps ranks ([`FlatCells::Ranked`]) from `ranked_from` bytes of four-byte
/// cells on.
#[derive(Debug, Clone, Copy)]
struct CellWidth {
    slots: usize,
    ranked_from: usize,
}

impl CellWidth {
    /// Whether every slot fits a two-byte cell ([`FlatCells::Narrow`]), with `u16::MAX` left
    /// for `NONE`.
    fn slots_in_two_bytes(self) -> bool {
        self.slots < usize::from(u16::MAX)
    }
}

/// The forms of [`FlatCells`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CellForm {
    Narrow,
    Ranked,
    Wide,
}

/// The distinct slots in a dense or chunked table's cells, which decide how its cells are
/// kept ([`FlatCells`]): as slots in two bytes while every slot is below `u16::MAX`; else as
/// ranks in two bytes where fewer than `u16::MAX` distinct slots are in cells that would take
/// at least [`CellWidth::ranked_from`] bytes in four; else as slots in four.
struct CellSlots {
    width: CellWidth,
    /// Whether a cell holds each slot of the table's lookups (empty, and not counted, while
    /// every slot fits two bytes).
    seen: Vec<bool>,
    distinct: usize,
    cells: usize,
}

impl CellSlots {
    fn new(width: CellWidth) -> CellSlots {
        let counted = if width.slots_in_two_bytes() {
            0
        } else {
            width.slots
        };
        CellSlots {
            width,
            seen: vec![false; counted],
            distinct: 0,
            cells: 0,
        }
    }

    /// Counts a new chunk's cells.
    fn add(&mut self, cells: &[u32]) {
        if self.width.slots_in_two_bytes() {
            return;
        }
        self.cells += cells.len();
        for &slot in cells.iter().filter(|&&slot| slot != NONE) {
            let seen = &mut self.seen[slot as usize];
            self.distinct += usize::from(!*seen);
            *seen = true;
        }
    }

    /// The form the cells take, counted so far.
    fn form(&self) -> CellForm {
        if self.width.slots_in_two_bytes() {
            CellForm::Narrow
        } else if self.distinct < usize::from(u16::MAX)
            && self.cells.saturating_mul(4) >= self.width.ranked_from
        {
            CellForm::Ranked
        } else {
            CellForm::Wide
        }
    }

    fn cell_bytes(&self) -> usize {
        match self.form() {
            CellForm::Narrow | CellForm::Ranked => 2,
            CellForm::Wide => 4,
        }
    }

    /// Bytes of the slot of each rank.
    fn rank_bytes(&self) -> usize {
        match self.form() {
            CellForm::Ranked => self.distinct * 4,
            CellForm::Narrow | CellForm::Wide => 0,
        }
    }

    /// The cells of `slots` (each a slot [`CellSlots::add`] saw, or `NONE`).
    fn cells(&self, slots: impl Iterator<Item = u32>) -> FlatCells {
        fn narrow(slots: impl Iterator<Item = u32>, number: impl Fn(u32) -> u16) -> Box<[u16]> {
            slots
                .map(|slot| match slot {
                    NONE => u16::MAX,
                    slot => number(slot),
                })
                .collect()
        }
        match self.form() {
            CellForm::Narrow => FlatCells::Narrow(narrow(slots, |slot| slot as u16)),
            CellForm::Ranked => {
                let ranked: Box<[u32]> = (0..self.seen.len() as u32)
                    .filter(|&slot| self.seen[slot as usize])
                    .collect();
                let mut rank_of = vec![u16::MAX; self.seen.len()];
                for (rank, &slot) in ranked.iter().enumerate() {
                    rank_of[slot as usize] = rank as u16;
                }
                FlatCells::Ranked {
                    ranks: narrow(slots, |slot| rank_of[slot as usize]),
                    slots: ranked,
                }
            }
            CellForm::Wide => FlatCells::Wide(slots.collect()),
        }
    }
}

/// `steps` in runs of one row: a row that the step before repeats (across a block start)
/// needs no record of its own.
fn runs_of_a_row(steps: &[(u32, u32)]) -> impl Iterator<Item = &[(u32, u32)]> {
    steps.chunk_by(|a, b| a.1 == b.1)
}

/// How many records [`v4_records`] keeps for `steps`.
fn v4_record_count(steps: &[(u32, u32)]) -> usize {
    runs_of_a_row(steps).count()
}

/// The records of the IPv4 rows `steps` start (each row's in `records`), one per run of a
/// row, with the run's start.
fn v4_records(steps: &[(u32, u32)], records: &[RowSteps]) -> Vec<RowSteps> {
    let mut v4: Vec<RowSteps> = Vec::with_capacity(v4_record_count(steps));
    v4.extend(runs_of_a_row(steps).map(|run| {
        let (from, row) = run[0];
        RowSteps {
            from,
            ..records[row as usize]
        }
    }));
    v4
}

/// The IPv6 rows `steps` start, renumbered in the order they first appear, and their records.
fn v6_records(steps: &[(u128, u32)], records: &[RowSteps]) -> (Vec<(u128, u32)>, Vec<RowSteps>) {
    let mut number = vec![u32::MAX; records.len()];
    let mut v6 = Vec::new();
    let steps = steps
        .iter()
        .map(|&(start, row)| {
            let n = &mut number[row as usize];
            if *n == u32::MAX {
                *n = v6.len() as u32;
                v6.push(records[row as usize]);
            }
            (start, *n)
        })
        .collect();
    (steps, v6)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compile::CompileOptions;
    use crate::Classifier;

    /// Rules on ports, ranges, whole protocols, `notProtocol` and every protocol, over nested
    /// IPv4 and IPv6 nets, in an order where later rules are shadowed in places.
    const RULES: &str = r#"
  - {action: Deny, protocol: TCP, source: {nets: ["10.1.2.0/24", "fd00::/120"]}, destination: {ports: [80]}}
  - {action: Allow, protocol: TCP, source: {nets: ["10.1.0.0/16"]}, destination: {ports: ["1000:2000", 443]}}
  - {action: Allow, protocol: UDP, source: {nets: ["10.1.2.128/25", "fd00::80/121"]}, destination: {ports: [53]}}
  - {action: Deny, protocol: TCP, source: {nets: ["10.0.0.0/8"]}}
  - {action: Allow, notProtocol: UDP, source: {nets: ["192.168.0.0/16", "fd00::/64"]}}
  - {action: Allow, protocol: ICMP, source: {nets: ["0.0.0.0/0"]}}
  - {action: Allow, protocol: TCP, destination: {ports: [22]}}
  - {action: Deny, source: {nets: ["10.1.2.3/32", "::/0"]}}
"#;

    /// Fewer rules, so that every row changes slot at most four times over the ports (5
    /// steps at 10.1.2.200: TCP 0 → rule 3, TCP 80 → 0, TCP 1000 → 1, UDP 53 → 2, UDP 54 → 3),
    /// and the steps shape fits.
    const STEPS_RULES: &str = r#"
  - {action: Deny, protocol: TCP, source: {nets: ["10.1.2.0/24", "fd00::/120"]}, destination: {ports: [80]}}
  - {action: Allow, protocol: TCP, source: {nets: ["10.1.0.0/16"]}, destination: {ports: ["1000:2000"]}}
  - {action: Allow, protocol: UDP, source: {nets: ["10.1.2.128/25", "fd00::80/121"]}, destination: {ports: [53]}}
  - {action: Deny, source: {nets: ["10.0.0.0/8", "fd00::/64"]}}
  - {action: Allow, protocol: ICMP, source: {nets: ["0.0.0.0/0"]}}
"#;

    /// Rules over every address on several ports each, so that a row has more than five steps
    /// over no base (8.8.8.8 over the TCP ports: rules 11, 4, 11, 5, 11, 6, 11, 7, 11), but at
    /// most five over its block's base; prefixes that cross a block's first address
    /// (9.255.255.0/23, 10.0.0.0/7, 8.0.0.0/6), and IPv6. The second rule's row runs from
    /// 12.128.0.0 into block 13 with no start at 13.0.0.0, over bases that differ there (block
    /// 12's base is under the first rule, block 13's over 13.128.0.0 under neither): cut
    /// nowhere but at starts, it would answer 13.0.0.1 on TCP port 5 from block 12's base.
    /// The same from 2080:: into block 0x21 for IPv6.
    const BASES_RULES: &str = r#"
  - {action: Allow, protocol: TCP, source: {nets: ["12.0.0.0/9", "2000::/9"]}}
  - {action: Deny, protocol: TCP, source: {nets: ["12.128.0.0/9", "13.0.0.0/9", "2080::/9", "2100::/9"]}, destination: {ports: [5]}}
  - {action: Deny, protocol: TCP, source: {nets: ["10.1.2.0/24"]}, destination: {ports: [80]}}
  - {action: Allow, protocol: TCP, source: {nets: ["9.255.255.0/23", "fd00::/120"]}, destination: {ports: [22, 443]}}
  - {action: Allow, protocol: TCP, source: {nets: ["0.0.0.0/0", "::/0"]}, destination: {ports: [1]}}
  - {action: Deny, protocol: TCP, source: {nets: ["0.0.0.0/0"]}, destination: {ports: [3]}}
  - {action: Allow, protocol: TCP, source: {nets: ["0.0.0.0/0", "::/0"]}, destination: {ports: [5]}}
  - {action: Deny, protocol: TCP, source: {nets: ["0.0.0.0/0"]}, destination: {ports: [7]}}
  - {action: Allow, protocol: UDP, source: {nets: ["0.0.0.0/0", "::/0"]}, destination: {ports: [9]}}
  - {action: Allow, protocol: UDP, source: {nets: ["10.0.0.0/7"]}, destination: {ports: [53]}}
  - {action: Deny, source: {nets: ["11.0.0.0/8"]}}
  - {action: Allow, protocol: TCP, source: {nets: ["8.0.0.0/6", "fd00::/16"]}}
"#;

    /// A GlobalNetworkPolicy of `rules` on the ingress of every pod, and one pod.
    fn policy(rules: &str) -> String {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\n\
             spec:\n  selector: all()\n  types: [Ingress]\n  ingress:{rules}---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {{name: n}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: n}}\n\
             status: {{podIP: 10.0.0.1}}\n"
        )
    }

    /// The layered lookup of the pod's ingress table, compiled without a product.
    fn layered(fold_budget: usize) -> Classifier {
        layered_of(RULES, fold_budget)
    }

    fn layered_of(rules: &str, fold_budget: usize) -> Classifier {
        let text = policy(rules);
        let cluster = Arc::new(crate::load(&[crate::Source::new("p.yaml", text)]).expect("valid"));
        Classifier::compile_with(
            cluster,
            CompileOptions {
                fold_budget,
                product_budget: 0,
                dense_product_budget: 0,
                ..Default::default()
            },
        )
    }

    fn lookup(classifier: &Classifier) -> &Lookup {
        let chain = classifier
            .chain(0, crate::Direction::Ingress)
            .expect("a chain");
        &chain.tiers[0].rules.lookup
    }

    fn probes() -> Vec<(IpAddr, Protocol, u16)> {
        let peers = [
            "10.1.2.3",
            "10.1.2.4",
            "10.1.2.200",
            "10.1.9.9",
            "10.9.9.9",
            "192.168.3.3",
            "8.8.8.8",
            "9.1.1.1",
            "9.255.255.1",
            "10.0.0.0",
            "11.1.1.1",
            "12.0.0.1",
            "12.200.0.1",
            "13.0.0.1",
            "13.200.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "fd00::1",
            "fd00::90",
            "fd00::1:0",
            "2001:db8::1",
            "::",
            "2000::1",
            "2090::1",
            "2100::1",
            "2190::1",
            "ff00::1",
        ];
        let mut probes = Vec::new();
        for peer in peers {
            for protocol in [
                Protocol::TCP,
                Protocol::UDP,
                Protocol::ICMP,
                Protocol::SCTP,
                Protocol(47),
            ] {
                for port in [
                    0, 1, 3, 4, 5, 7, 9, 22, 53, 79, 80, 81, 443, 999, 1000, 1500, 2000, 2001,
                    65535,
                ] {
                    probes.push((peer.parse().expect("an address"), protocol, port));
                }
            }
        }
        probes
    }

    /// Every shape of [`RULES`]: dense, and chunks of 1 to 64 columns (the policy has a few
    /// columns, so the narrow chunks give rows of several chunks). Its rows have too many
    /// steps for the steps shape.
    const SHAPES: [Shape; 5] = [
        Shape::Dense,
        Shape::Chunked { shift: 0 },
        Shape::Chunked { shift: 1 },
        Shape::Chunked { shift: 2 },
        Shape::Chunked { shift: 6 },
    ];

    /// More slots than any of these tests' policies number, all below `u16::MAX`.
    const SLOTS: usize = 1024;

    /// Cells for slots numbered below `slots`, in ranks past `u16::MAX` however few.
    fn width(slots: usize) -> CellWidth {
        CellWidth {
            slots,
            ranked_from: 0,
        }
    }

    fn build_as(lookup: &Lookup, slots: usize, shape: Shape, limit: usize) -> Option<Product> {
        build_in_width(lookup, width(slots), shape, limit)
    }

    /// [`build_as`] with the cells' width given.
    fn build_in_width(
        lookup: &Lookup,
        width: CellWidth,
        shape: Shape,
        limit: usize,
    ) -> Option<Product> {
        Product::build_in(
            &[Layer::of(lookup)?],
            &[vec![0]],
            width,
            &[(shape, limit)],
            usize::MAX,
        )
    }

    /// Each rule list with the shapes it fits.
    fn policies_and_shapes() -> [(&'static str, Vec<Shape>); 3] {
        let with_steps = || std::iter::once(Shape::Steps).chain(SHAPES).collect();
        [
            (RULES, SHAPES.to_vec()),
            (STEPS_RULES, with_steps()),
            (BASES_RULES, with_steps()),
        ]
    }

    #[test]
    fn a_row_of_more_than_five_steps_fits_over_its_blocks_base() {
        let classifier = layered_of(BASES_RULES, 0);
        let lookup = lookup(&classifier);
        let peer: IpAddr = "8.8.8.8".parse().expect("an address");
        let slots: Vec<u32> = (0..=1000)
            .map(|port| lookup.first(None, peer, Protocol::TCP, port))
            .collect();
        let steps = 1 + slots.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(steps > RowSteps::MAX, "{steps} steps over no base");
        let product = build_as(lookup, SLOTS, Shape::Steps, usize::MAX).expect("fits over bases");
        let Cells::Steps { bases, .. } = &product.cells else {
            panic!("a steps product")
        };
        // 8.x (all of it under 8.0.0.0/6) and 12.x (under no rule but those of every
        // address) have bases of their own.
        assert_ne!(bases.v4[8], bases.v4[12]);
    }

    /// The fewest steps that give `row` over `base`: a run of columns can be one step if some
    /// slot gives each of them its slot (the column's own where it is below the base, any
    /// from the base's up elsewhere).
    fn fewest_steps(row: &[u32], base: &[u32]) -> usize {
        let one_step = |columns: std::ops::Range<usize>| {
            let mut needed: Option<u32> = None;
            let mut at_least = 0;
            for c in columns {
                if row[c] < base[c] {
                    if needed.is_some_and(|slot| slot != row[c]) {
                        return false;
                    }
                    needed = Some(row[c]);
                } else {
                    at_least = at_least.max(base[c]);
                }
            }
            needed.is_none_or(|slot| slot >= at_least)
        };
        let mut fewest = vec![usize::MAX; row.len() + 1];
        fewest[0] = 0;
        for end in 1..=row.len() {
            for start in 0..end {
                if fewest[start] != usize::MAX && one_step(start..end) {
                    fewest[end] = fewest[end].min(fewest[start] + 1);
                }
            }
        }
        fewest[row.len()]
    }

    proptest::proptest! {
        /// Against every way to cut the row: a record where the fewest steps are at most five,
        /// with that many steps, and the lower of its slot and the base's is the row's slot
        /// in every column.
        #[test]
        fn a_record_over_a_base_has_the_fewest_steps(
            columns in proptest::collection::vec(
                (0..6usize, 0..6usize, proptest::bool::ANY), 1..14),
        ) {
            let slots = [0, 1, 2, 3, 4, NONE];
            let (row, base): (Vec<u32>, Vec<u32>) = columns
                .iter()
                .map(|&(a, b, alike)| {
                    let (a, b) = (slots[a], if alike { slots[a] } else { slots[b] });
                    (a.min(b), a.max(b))
                })
                .unzip();
            let fewest = fewest_steps(&row, &base);
            match RowSteps::words_over(&row, &base) {
                None => proptest::prop_assert!(fewest > RowSteps::MAX, "{fewest}"),
                Some(words) => {
                    let record = RowSteps::from_words(&words);
                    let unused = (0..4)
                        .filter(|lane| (record.starts >> (16 * lane)) as u16 == RowSteps::UNUSED)
                        .count();
                    proptest::prop_assert_eq!(RowSteps::MAX - unused, fewest);
                    for (column, (&slot, &floor)) in row.iter().zip(&base).enumerate() {
                        proptest::prop_assert_eq!(record.slot(column as u32).min(floor), slot);
                    }
                }
            }
        }
    }

    #[test]
    fn a_record_over_a_base_takes_the_lower_slot_in_every_column() {
        // A late rule (7) over some columns: below the base there, above it elsewhere.
        let base = [5, 5, 9, 9, 5, 9, 5, 9, 5];
        let row = [5, 5, 7, 7, 5, 7, 5, 7, 5];
        assert!(words_of(&row).is_none(), "seven steps over no base");
        let words = RowSteps::words_over(&row, &base).expect("one step");
        let record = RowSteps::from_words(&words);
        assert_eq!(record.starts, 0x7FFF_7FFF_7FFF_7FFF);
        assert_eq!(words[2], 7);
        for (column, (&slot, &floor)) in row.iter().zip(&base).enumerate() {
            assert_eq!(record.slot(column as u32).min(floor), slot, "{column}");
        }
        // Columns below the base with different slots need steps of their own; a column at
        // its base takes no slot of its own (step 0 is `NONE`).
        let row = [5, 2, 2, 9, 3, 5];
        let base = [5, 9, 9, 9, 9, 5];
        let words = RowSteps::words_over(&row, &base).expect("five steps");
        let record = RowSteps::from_words(&words);
        assert_eq!(words[2..], [NONE, 2, NONE, 3, NONE]);
        for (column, (&slot, &floor)) in row.iter().zip(&base).enumerate() {
            assert_eq!(record.slot(column as u32).min(floor), slot, "{column}");
        }
    }

    #[test]
    fn every_shape_answers_like_the_layered_lookup_with_slots_and_with_ranks_in_its_cells() {
        for ((policy, shapes), fold_budget) in policies_and_shapes()
            .into_iter()
            .flat_map(|p| [(p.clone(), 0), (p, usize::MAX)])
        {
            let classifier = layered_of(policy, fold_budget);
            let lookup = lookup(&classifier);
            assert!(lookup.product.is_none());
            for shape in shapes {
                let narrow =
                    build_as(lookup, SLOTS, shape, usize::MAX).expect("addresses and ports");
                let ranked =
                    build_as(lookup, 70_000, shape, usize::MAX).expect("addresses and ports");
                assert_eq!(narrow.shape(), shape);
                if shape == Shape::Steps {
                    assert!(matches!(narrow.cells, Cells::Steps { .. }));
                    assert!(matches!(ranked.cells, Cells::Steps { .. }));
                } else {
                    assert!(matches!(narrow.cells, Cells::Flat(FlatCells::Narrow(_))));
                    assert!(matches!(
                        ranked.cells,
                        Cells::Flat(FlatCells::Ranked { .. })
                    ));
                }
                if shape == (Shape::Chunked { shift: 1 }) {
                    assert!(narrow.chunks_per_row > 1, "{}", narrow.chunks_per_row);
                }
                let mut matched = 0;
                for (peer, protocol, port) in probes() {
                    let want = lookup.first(None, peer, protocol, port);
                    matched += usize::from(want != NONE);
                    let context =
                        format!("{shape:?} fold {fold_budget} {peer} {protocol:?} {port}");
                    assert_eq!(narrow.first(peer, protocol, port), want, "{context}");
                    assert_eq!(ranked.first(peer, protocol, port), want, "{context}");
                }
                assert!(matched > 50, "the probes hit rules ({matched})");
                for product in [&narrow, &ranked] {
                    assert_eq!(staged_firsts(product), product_firsts(product), "{shape:?}");
                }
            }
        }
    }

    #[test]
    fn cells_keep_slots_in_two_bytes_then_ranks_until_u16_max_distinct_slots_then_four() {
        let few = [3, NONE, 3, 0, 7];
        let mut narrow = CellSlots::new(width(8));
        narrow.add(&few);
        let many = [70_000, NONE, 65_535, 0, 70_000];
        // Ranked from exactly the bytes the five cells would take in four bytes each, and not
        // from one byte more.
        let mut ranked = CellSlots::new(CellWidth {
            slots: 70_001,
            ranked_from: 20,
        });
        ranked.add(&many);
        let mut small = CellSlots::new(CellWidth {
            slots: 70_001,
            ranked_from: 21,
        });
        small.add(&many);
        let mut crowded = CellSlots::new(width(70_001));
        crowded.add(&(0..u32::from(u16::MAX) - 3).collect::<Vec<_>>());
        crowded.add(&many);
        let most_ranked = crowded.distinct;
        crowded.add(&[65_536]);
        assert_eq!(
            most_ranked,
            usize::from(u16::MAX) - 1,
            "{}",
            crowded.distinct
        );
        for (table, slots, want) in [
            (&narrow, &few, "narrow"),
            (&ranked, &many, "ranked"),
            (&small, &many, "wide"),
            (&crowded, &many, "wide"),
        ] {
            let cells = table.cells(slots.iter().copied());
            let (kind, bytes) = match &cells {
                FlatCells::Narrow(_) => ("narrow", 2),
                FlatCells::Ranked { slots, .. } => {
                    assert_eq!(**slots, [0, 65_535, 70_000]);
                    ("ranked", 2)
                }
                FlatCells::Wide(_) => ("wide", 4),
            };
            assert_eq!((kind, bytes), (want, table.cell_bytes()));
            assert_eq!(cells.heap_bytes(), slots.len() * bytes + table.rank_bytes());
            let read: Vec<u32> = (0..slots.len()).map(|at| cells.slot(at)).collect();
            assert_eq!(read, slots, "{kind}");
        }
    }

    fn product_firsts(product: &Product) -> Vec<u32> {
        probes()
            .into_iter()
            .map(|(peer, protocol, port)| product.first(peer, protocol, port))
            .collect()
    }

    /// [`product_firsts`] by [`first_each`], in groups of [`STAGED`] probes.
    fn staged_firsts(product: &Product) -> Vec<u32> {
        let lookups: Vec<Staged<'_>> = probes()
            .into_iter()
            .map(|(peer, protocol, port)| Staged {
                product,
                part: 0,
                peer,
                protocol,
                port,
            })
            .collect();
        let mut firsts = vec![NONE; lookups.len()];
        for (group, out) in lookups.chunks(STAGED).zip(firsts.chunks_mut(STAGED)) {
            first_each(group, out);
        }
        firsts
    }

    #[test]
    fn no_product_is_built_past_the_budget_of_its_shape() {
        for (policy, shapes) in policies_and_shapes() {
            let classifier = layered_of(policy, 0);
            let lookup = lookup(&classifier);
            for shape in shapes {
                let built = build_as(lookup, SLOTS, shape, usize::MAX).expect("within no limit");
                let bytes = built.table_bytes();
                assert!(build_as(lookup, SLOTS, shape, bytes).is_some(), "{shape:?}");
                assert!(
                    build_as(lookup, SLOTS, shape, bytes - 1).is_none(),
                    "{shape:?}"
                );
            }
        }
    }

    #[test]
    fn a_chunked_table_past_its_limit_in_four_byte_cells_fits_in_ranks_from_their_threshold_on() {
        let mut smaller_in_ranks = 0;
        for (policy, shapes) in policies_and_shapes() {
            let classifier = layered_of(policy, 0);
            let lookup = lookup(&classifier);
            let chunked = shapes
                .into_iter()
                .filter(|shape| matches!(shape, Shape::Chunked { .. }));
            for shape in chunked {
                let build = |ranked_from, limit| {
                    let width = CellWidth {
                        slots: 70_000,
                        ranked_from,
                    };
                    build_in_width(lookup, width, shape, limit)
                };
                let wide = build(usize::MAX, usize::MAX).expect("within no limit");
                let Cells::Flat(FlatCells::Wide(cells)) = &wide.cells else {
                    panic!("{shape:?}: four-byte cells below their threshold");
                };
                let wide_cells = std::mem::size_of_val(&**cells);
                let limit = build(0, usize::MAX).expect("no limit").table_bytes();
                if limit >= wide.table_bytes() {
                    // So few cells that the slots of the ranks outweigh what they save.
                    continue;
                }
                smaller_in_ranks += 1;
                // Ranks from half the four-byte cells: the table takes them before it
                // outgrows the limit, and answers as the wide one.
                let ranked = build(wide_cells / 2, limit).expect("fits in ranks");
                assert!(matches!(
                    ranked.cells,
                    Cells::Flat(FlatCells::Ranked { .. })
                ));
                assert_eq!(product_firsts(&ranked), product_firsts(&wide), "{shape:?}");
                assert!(build(wide_cells + 1, limit).is_none(), "{shape:?}");
            }
        }
        assert!(
            smaller_in_ranks >= 4,
            "{smaller_in_ranks} tables smaller in ranks"
        );
    }

    #[test]
    fn rows_with_more_than_five_steps_do_not_take_the_steps_shape() {
        let classifier = layered(0);
        let lookup = lookup(&classifier);
        assert!(build_as(lookup, SLOTS, Shape::Steps, usize::MAX).is_none());
        let built = Product::build(lookup, SLOTS, budgets(0, usize::MAX, usize::MAX));
        assert!(matches!(
            built.expect("chunks fit").shape(),
            Shape::Chunked { .. }
        ));
    }

    /// The record of `row` over no base.
    fn words_of(row: &[u32]) -> Option<[u32; RowSteps::WORDS]> {
        RowSteps::words_over(row, &vec![NONE; row.len()])
    }

    /// A row of `width` columns whose slot changes at `starts` (the first at column 0),
    /// slot 10 × the step's number.
    fn row_of_steps(width: usize, starts: &[usize]) -> Vec<u32> {
        (0..width)
            .map(|column| 10 * starts.iter().filter(|&&s| s <= column).count() as u32)
            .collect()
    }

    #[test]
    fn a_row_of_at_most_five_steps_answers_every_column_from_its_record() {
        let widest = usize::from(RowSteps::UNUSED);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut random = |below: usize| {
            state = mix64(state.wrapping_add(1));
            (state % below as u64) as usize
        };
        for width in [1, 2, 5, 6, 209, widest] {
            for steps in 1..=RowSteps::MAX.min(width) {
                for _ in 0..20 {
                    let mut starts = vec![0];
                    while starts.len() < steps {
                        let start = 1 + random(width - 1);
                        if !starts.contains(&start) {
                            starts.push(start);
                        }
                    }
                    starts.sort_unstable();
                    if steps > 1 && width > 6 {
                        // The last column is a step's start now and then.
                        *starts.last_mut().expect("steps") = width - 1;
                    }
                    let row = row_of_steps(width, &starts);
                    let words = words_of(&row).expect("at most five steps");
                    let record = RowSteps::from_words(&words);
                    for (column, &slot) in row.iter().enumerate() {
                        assert_eq!(record.slot(column as u32), slot, "{starts:?} {column}");
                    }
                }
            }
        }
        assert!(words_of(&row_of_steps(300, &[0, 1, 2, 3, 4, 299])).is_none());
        // Steps of one slot apart are one step.
        let mut row = row_of_steps(300, &[0, 1, 2, 3, 4]);
        row.extend(row_of_steps(300, &[0, 1, 2, 3, 4]));
        assert!(words_of(&row).is_none());
        let alike = [NONE, NONE, 7, 7, NONE, 3];
        let record = RowSteps::from_words(&words_of(&alike).expect("4 steps"));
        assert_eq!(record.slot(1), NONE);
        assert_eq!(record.slot(3), 7);
        assert_eq!(record.slot(5), 3);
    }

    #[test]
    fn the_steps_shape_numbers_columns_in_port_order_and_stays_within_its_width() {
        let classifier = layered_of(STEPS_RULES, 0);
        let lookup = lookup(&classifier);
        let product =
            build_as(lookup, SLOTS, Shape::Steps, usize::MAX).expect("five steps at most");
        // Protocols in order (ICMP is 1, TCP 6), ports from 0.
        let columns: Vec<u32> = [
            (Protocol::ICMP, 0),
            (Protocol::TCP, 0),
            (Protocol::TCP, 80),
            (Protocol::TCP, 1000),
        ]
        .iter()
        .map(|&(protocol, port)| product.column(0, protocol, port))
        .collect();
        assert_eq!(columns, [0, 1, 2, 3]);
        let layers = [Layer::of(lookup).expect("addresses and ports only")];
        let inputs = Inputs::of(&layers, &[vec![0]]);
        let wide = Merge::from_ids((0..=u32::from(RowSteps::UNUSED)).collect());
        let built = Table::new(Shape::Steps, &wide, &inputs, width(SLOTS), usize::MAX).map(|_| ());
        assert!(matches!(built, Err(Stop::Unfit)), "{built:?}");
    }

    fn budgets(dense: usize, steps: usize, any: usize) -> Budgets {
        Budgets {
            any,
            dense,
            steps,
            ranked_cells: 0,
        }
    }

    #[test]
    fn dense_is_taken_within_its_budget_then_steps_within_theirs_else_the_smallest_chunks() {
        let classifier = layered_of(STEPS_RULES, 0);
        let lookup = lookup(&classifier);
        let bytes = |shape| {
            build_as(lookup, SLOTS, shape, usize::MAX)
                .expect("no limit")
                .table_bytes()
        };
        let (dense, steps) = (bytes(Shape::Dense), bytes(Shape::Steps));
        let built = Product::build(lookup, SLOTS, budgets(dense, usize::MAX, usize::MAX));
        assert_eq!(built.expect("dense fits").shape(), Shape::Dense);
        // Steps even where chunks would be smaller: one load instead of two.
        let built = Product::build(lookup, SLOTS, budgets(dense - 1, steps, usize::MAX));
        assert_eq!(built.expect("steps fit").shape(), Shape::Steps);
        let built = Product::build(lookup, SLOTS, budgets(dense - 1, steps - 1, usize::MAX));
        let smallest = Shape::ALL[2..]
            .iter()
            .map(|&s| bytes(s))
            .min()
            .expect("chunked shapes");
        let built = built.expect("chunked fits");
        assert!(matches!(built.shape(), Shape::Chunked { .. }));
        assert_eq!(built.table_bytes(), smallest);
        assert!(Product::build(lookup, SLOTS, budgets(0, 0, smallest - 1)).is_none());
        // Within the budget of any shape only.
        let built = Product::build(lookup, SLOTS, budgets(usize::MAX, usize::MAX, steps - 1));
        assert!(built.is_none_or(|p| p.table_bytes() < steps));
    }

    #[test]
    fn a_merge_of_columns_that_differ_is_caught() {
        for (policy, shapes) in policies_and_shapes() {
            let classifier = layered_of(policy, 0);
            let lookup = lookup(&classifier);
            let product = Product::build(lookup, SLOTS, budgets(usize::MAX, 0, usize::MAX));
            let product = product.expect("no limit");
            assert!(product.chunk_len > 1, "the policy has columns that differ");
            let slots_of = |shape| {
                // Every column claimed to be one: wrong wherever two port classes differ.
                let layers = [Layer::of(lookup).expect("addresses and ports only")];
                let inputs = Inputs::of(&layers, &[vec![0]]);
                let merge = Merge::from_ids(vec![0; inputs.columns.len()]);
                Table::new(shape, &merge, &inputs, width(SLOTS), usize::MAX).map(|_| ())
            };
            for shape in shapes {
                assert!(matches!(slots_of(shape), Err(Stop::Collision)), "{shape:?}");
            }
        }
    }

    #[test]
    fn the_bytes_a_shape_takes_at_least_are_at_most_what_it_takes() {
        for ((policy, shapes), fold_budget) in policies_and_shapes()
            .into_iter()
            .flat_map(|p| [(p.clone(), 0), (p, usize::MAX)])
        {
            let classifier = layered_of(policy, fold_budget);
            let layers = [Layer::of(lookup(&classifier)).expect("addresses and ports only")];
            let inputs = Inputs::of(&layers, &[vec![0]]);
            let merge = Merge::hashed(&inputs);
            let ported = merge.in_port_order(&inputs);
            for shape in shapes {
                let merge = if shape == Shape::Steps {
                    &ported
                } else {
                    &merge
                };
                let table =
                    Table::new(shape, merge, &inputs, width(SLOTS), usize::MAX).expect("no limit");
                assert!(
                    merge.bytes_at_least(shape, width(SLOTS)) <= table.bytes(),
                    "{shape:?}"
                );
                if shape == Shape::Dense {
                    // Without a collision of row hashes, the count is exact.
                    assert_eq!(merge.rows_at_least, table.chunks.count());
                } else {
                    // (A dense table's bound counts four bytes a cell past `u16::MAX` slots.)
                    let ranked = Table::new(shape, merge, &inputs, width(70_000), usize::MAX)
                        .expect("no limit");
                    assert!(
                        merge.bytes_at_least(shape, width(70_000)) <= ranked.bytes(),
                        "{shape:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_merge_of_columns_that_part_after_the_first_start_is_caught() {
        let classifier = layered(0);
        let layers = [Layer::of(lookup(&classifier)).expect("addresses and ports only")];
        let inputs = Inputs::of(&layers, &[vec![0]]);
        let mut rows: Vec<Vec<u32>> = Vec::new();
        inputs
            .v4
            .walk(&inputs.columns, &inputs.columns_of_source, |_, row, _| {
                rows.push(row.to_vec());
                Ok(())
            })
            .expect("a walk without a table never stops");
        let columns = inputs.columns.len();
        let (a, b) = (0..columns)
            .flat_map(|a| (a + 1..columns).map(move |b| (a, b)))
            .find(|&(a, b)| rows[0][a] == rows[0][b] && rows.iter().any(|r| r[a] != r[b]))
            .expect("two columns alike at 0.0.0.0 that differ further on");
        // Column `b` claimed to be `a`, with every other column its own.
        let ids = (0..columns as u32).map(|k| match k as usize {
            k if k == b => a as u32,
            k if k > b => k as u32 - 1,
            k => k as u32,
        });
        let merge = Merge::from_ids(ids.collect());
        for shape in std::iter::once(Shape::Steps).chain(SHAPES) {
            let built = Table::new(shape, &merge, &inputs, width(SLOTS), usize::MAX).map(|_| ());
            assert!(matches!(built, Err(Stop::Collision)), "{shape:?}");
        }
    }
}
