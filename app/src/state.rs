//! The app's shared state: signals wrapped in context newtypes, provided once by `App` and read by any component
//! with `expect_context::<T>()`.

use engine::protocol::{BackendChoice, BackendInfo, CacheEntry, LoadStats, ModelCard, Origin, Stage, Store};
use engine::session::{Stats, StopReason};
use leptos::prelude::*;

pub use crate::conversations::{LoraLabel, TokenChip};
pub use crate::datasets::RunSettings;

/// Where the model stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// The worker is starting.
    Starting,
    /// No model is loaded.
    Empty,
    Loading,
    Ready,
    Generating,
    Failed(String),
}

/// Load progress, with when it started (ms, `Date.now`) for speed and time left.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub stage: Stage,
    pub done: u64,
    pub total: u64,
    pub started_ms: f64,
    pub now_ms: f64,
}

/// The model: what is loaded, on what, and how loading goes.
#[derive(Clone, Copy)]
pub struct ModelState {
    pub status: RwSignal<Status>,
    pub url: RwSignal<String>,
    pub progress: RwSignal<Option<Progress>>,
    pub card: RwSignal<Option<ModelCard>>,
    pub backend: RwSignal<Option<BackendInfo>>,
    pub load: RwSignal<Option<LoadStats>>,
    /// Why the worker refused a request that has no view of its own (a load while a Magpie run goes).
    pub notice: RwSignal<Option<String>>,
    /// Why the last load failed, in the user's words, and the technical text (until the next load starts).
    pub load_error: RwSignal<Option<(String, Option<String>)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// How an assistant message stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Streaming,
    Done(StopReason),
    Failed(String),
}

/// One message of the conversation; its text is a signal of its own so streaming touches one node.
#[derive(Clone, Copy)]
pub struct ChatMessage {
    pub id: u64,
    pub role: Role,
    pub text: RwSignal<String>,
    pub reply: RwSignal<Reply>,
    pub stats: RwSignal<Option<Stats>>,
    /// A reply's streamed pieces with the candidates the model weighed for each (for the token view).
    pub tokens: RwSignal<Vec<TokenChip>>,
    /// The adapters a reply was generated with, kept with it so its label outlives later changes to the panel.
    pub lora: RwSignal<Vec<LoraLabel>>,
}

impl ChatMessage {
    fn new(id: u64, role: Role, text: &str, reply: Reply) -> Self {
        ChatMessage {
            id,
            role,
            text: RwSignal::new(text.to_string()),
            reply: RwSignal::new(reply),
            stats: RwSignal::new(None),
            tokens: RwSignal::new(Vec::new()),
            lora: RwSignal::new(Vec::new()),
        }
    }
}

/// A saved conversation as the list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationEntry {
    pub id: u64,
    pub title: String,
    pub updated_ms: f64,
}

/// The conversation, and which reply (by generation id) is streaming.
#[derive(Clone, Copy)]
pub struct Chat {
    pub messages: RwSignal<Vec<ChatMessage>>,
    pub streaming: RwSignal<Option<u64>>,
    pub next_id: RwSignal<u64>,
    /// The saved conversation these messages belong to (None until the first message).
    pub conversation: RwSignal<Option<u64>>,
    /// Every saved conversation, most recent first.
    pub conversations: RwSignal<Vec<ConversationEntry>>,
    /// Why saving or reading conversations failed, if it did.
    pub storage_error: RwSignal<Option<String>>,
    /// The app's owner, which new messages' signals belong to: a message created from a click inside another
    /// message (Regenerate, Edit) must outlive that message's view.
    pub owner: StoredValue<Owner, LocalStorage>,
}

impl Chat {
    /// A new message whose signals live as long as the app.
    pub fn new_message(&self, role: Role, text: &str, reply: Reply) -> ChatMessage {
        let id = self.fresh_id();
        self.owner.with_value(|o| o.with(|| ChatMessage::new(id, role, text, reply)))
    }

    pub fn fresh_id(&self) -> u64 {
        let id = self.next_id.get_untracked();
        self.next_id.set(id + 1);
        id
    }

    /// The assistant message a generation writes to.
    pub fn reply(&self, id: u64) -> Option<ChatMessage> {
        self.messages.with_untracked(|m| m.iter().find(|m| m.id == id && m.role == Role::Assistant).copied())
    }
}

/// Generation settings.
#[derive(Clone, Copy)]
pub struct Settings {
    pub system_prompt: RwSignal<String>,
    /// 0 = greedy.
    pub temperature: RwSignal<f32>,
    pub seed: RwSignal<u64>,
    pub max_tokens: RwSignal<usize>,
    /// 0 = off.
    pub top_k: RwSignal<usize>,
    /// 1 = off.
    pub top_p: RwSignal<f32>,
    /// 0 = off.
    pub min_p: RwSignal<f32>,
    /// 1 = off.
    pub repeat_penalty: RwSignal<f32>,
    pub repeat_last_n: RwSignal<usize>,
}

impl Settings {
    /// The sampler's settings as they stand (tracked reads: call it in `untrack` outside effects that should not
    /// rerun on them).
    pub fn sampling(&self) -> engine::sampling::SamplingParams {
        engine::sampling::SamplingParams {
            temperature: self.temperature.get(),
            top_k: self.top_k.get(),
            top_p: self.top_p.get(),
            min_p: self.min_p.get(),
            repeat_penalty: self.repeat_penalty.get(),
            repeat_last_n: self.repeat_last_n.get(),
            seed: self.seed.get(),
        }
    }
}

/// The backend the next Load asks for (the adapter panel's choice, or `?backend=cpu|gpu` in the page URL).
#[derive(Clone, Copy)]
pub struct BackendPreference(pub RwSignal<BackendChoice>);

/// The models kept in the browser's storage, as the worker last listed them, the storage's quota, and where the
/// loaded model's bytes came from.
#[derive(Clone, Copy)]
pub struct Storage {
    pub entries: RwSignal<Vec<CacheEntry>>,
    pub store: RwSignal<Option<Store>>,
    /// Why models are not kept (or kept only in Cache Storage), when that is so.
    pub note: RwSignal<Option<String>>,
    /// Whether the worker has answered a listing yet.
    pub listed: RwSignal<bool>,
    /// `navigator.storage.estimate()`: (usage, quota) in bytes.
    pub estimate: RwSignal<Option<(u64, u64)>>,
    pub origin: RwSignal<Option<Origin>>,
}

impl Storage {
    /// The complete stored copy of `absolute_url`, if any.
    pub fn cached(&self, absolute_url: &str) -> Option<CacheEntry> {
        self.entries.with(|e| e.iter().find(|e| e.complete && e.url == absolute_url).cloned())
    }
}

/// Where a listed adapter stands with the loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraStatus {
    /// Fitted to the loaded model: generations may use it.
    Ready,
    /// Another model was loaded, and its URL is being loaded again for that model.
    Reloading,
    /// Another model was loaded, and it came from picked files, which the page cannot read again by itself.
    Stale,
}

/// A LoRA adapter in the Adapters panel, with the user's choice for the next replies.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedLora {
    /// The worker's id for it (what a generation names).
    pub id: u64,
    pub name: String,
    pub info: engine::lora::LoraInfo,
    /// Where it came from (None for picked files).
    pub url: Option<String>,
    pub bytes: u64,
    pub enabled: bool,
    pub scale: f32,
    pub status: LoraStatus,
}

/// The Adapters panel's state: the adapters, loads not yet answered, and the last failure in words.
#[derive(Clone, Copy)]
pub struct LoraState {
    pub adapters: RwSignal<Vec<LoadedLora>>,
    pub pending: RwSignal<u32>,
    pub error: RwSignal<Option<String>>,
}

/// Creates and provides every context newtype.
pub fn provide_state(default_url: String) {
    provide_context(LoraState {
        adapters: RwSignal::new(Vec::new()),
        pending: RwSignal::new(0),
        error: RwSignal::new(None),
    });
    provide_context(ModelState {
        status: RwSignal::new(Status::Starting),
        url: RwSignal::new(default_url),
        progress: RwSignal::new(None),
        card: RwSignal::new(None),
        backend: RwSignal::new(None),
        load: RwSignal::new(None),
        notice: RwSignal::new(None),
        load_error: RwSignal::new(None),
    });
    provide_context(Chat {
        messages: RwSignal::new(Vec::new()),
        streaming: RwSignal::new(None),
        next_id: RwSignal::new(1),
        conversation: RwSignal::new(None),
        conversations: RwSignal::new(Vec::new()),
        storage_error: RwSignal::new(None),
        owner: StoredValue::new_local(Owner::current().unwrap_or_default()),
    });
    provide_context(Storage {
        entries: RwSignal::new(Vec::new()),
        store: RwSignal::new(None),
        note: RwSignal::new(None),
        listed: RwSignal::new(false),
        estimate: RwSignal::new(None),
        origin: RwSignal::new(None),
    });
    let chat = engine::sampling::SamplingParams::chat();
    provide_context(Settings {
        system_prompt: RwSignal::new(String::new()),
        temperature: RwSignal::new(chat.temperature),
        seed: RwSignal::new(chat.seed),
        max_tokens: RwSignal::new(256),
        top_k: RwSignal::new(chat.top_k),
        top_p: RwSignal::new(chat.top_p),
        min_p: RwSignal::new(chat.min_p),
        repeat_penalty: RwSignal::new(chat.repeat_penalty),
        repeat_last_n: RwSignal::new(chat.repeat_last_n),
    });
    provide_context(BackendPreference(RwSignal::new(BackendChoice::Auto)));
    provide_dataset_state();
    provide_share_state();
    provide_train_state();
}

/// Where a batch run (Magpie or synthesis) stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Idle,
    /// `id` tags the worker's events for this run; `started_ms` is `Date.now` at its start.
    Running { id: u64, started_ms: f64 },
    /// Stopped before its last row; Resume asks for the rows it has not got.
    Paused,
    Failed(String),
}

impl RunStatus {
    pub fn running_id(&self) -> Option<u64> {
        match self {
            RunStatus::Running { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// How a Magpie run goes: rows of the run in the dataset out of `n`, and the worker's rates for the current request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunProgress {
    pub done: u64,
    pub n: u64,
    pub rows_per_minute: f64,
    pub tokens_per_second: f64,
    /// The engine's latest figures for the run (the page shows them as `data-stats`, which the benchmark reads).
    pub stats: Option<engine::batch::BatchStats>,
}

impl RunProgress {
    /// Seconds until the last row at the current pace (None until there is a pace).
    pub fn seconds_left(&self) -> Option<f64> {
        (self.rows_per_minute > 0.0).then(|| self.n.saturating_sub(self.done) as f64 * 60.0 / self.rows_per_minute)
    }
}

/// The pre-query template the worker derived for the loaded model and system prompt, or why it could not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreQueryInfo {
    pub template: Option<String>,
    pub error: Option<String>,
    pub notes: Vec<String>,
}

/// A judge pass over untagged rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgeRun {
    pub id: u64,
    pub done: usize,
    /// Rows the judge's answer gave tags to (an unreadable answer, or a row too long to judge, gives none).
    pub tagged: usize,
    pub total: usize,
}

/// The system prompt the Magpie form steers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemChoice {
    None,
    Custom,
    Preset(engine::magpie::SystemPreset),
}

/// Dataset changes not yet written to IndexedDB (see dataset_persist.rs).
#[derive(Debug, Default)]
pub struct Dirty {
    pub cleared: bool,
    pub put: std::collections::BTreeSet<String>,
    pub deleted: std::collections::BTreeSet<String>,
}

/// A synthesis run over raw text: its input and settings, and each chunk's result in chunk order.
#[derive(Clone, Copy)]
pub struct SynthState {
    /// The last run's id (0 before the first): its chunks are welcome even after Stop.
    pub id: RwSignal<u64>,
    pub text: RwSignal<String>,
    pub settings: RwSignal<engine::synth::SynthSettings>,
    pub status: RwSignal<RunStatus>,
    pub results: RwSignal<Vec<engine::synth::ChunkResult>>,
    /// Chunks in the run (known with its first result).
    pub total: RwSignal<usize>,
    pub stats: RwSignal<Option<engine::batch::BatchStats>>,
}

/// The Magpie dataset and the runs that make it. Lives at app level, so a run goes on whichever view is open.
#[derive(Clone, Copy)]
pub struct DatasetState {
    /// The rows: a run's rows in sample order (imported rows where they were added).
    pub rows: RwSignal<Vec<dataset::Row>>,
    pub status: RwSignal<RunStatus>,
    /// What the form shows: the next Start's settings.
    pub form: RwSignal<crate::datasets::RunSettings>,
    pub system_choice: RwSignal<SystemChoice>,
    pub custom_system: RwSignal<String>,
    /// The run going or last run: what Resume continues.
    pub run: RwSignal<Option<crate::datasets::RunSettings>>,
    pub progress: RwSignal<Option<RunProgress>>,
    pub pre_query: RwSignal<PreQueryInfo>,
    pub judge: RwSignal<Option<JudgeRun>>,
    pub synth: SynthState,
    /// Why reading or writing the saved dataset failed, if it did.
    pub storage_error: RwSignal<Option<String>>,
    /// A message about the last action (an import's bad lines, a refused start).
    pub notice: RwSignal<Option<String>>,
    /// Whether the saved dataset has been read (nothing is written before, so a slow read cannot be overwritten).
    pub loaded: RwSignal<bool>,
    pub dirty: StoredValue<Dirty, LocalStorage>,
    /// Bumped by every change that should be saved.
    pub version: RwSignal<u64>,
    /// The runs whose rows are welcome: a paused run's last rows arrive after its Pause.
    pub run_ids: StoredValue<Vec<u64>, LocalStorage>,
}

/// A row's sample index and seed, when a Magpie run made it.
fn sample_of(row: &dataset::Row) -> Option<(u64, u64)> {
    row.gen_input_configs.as_ref().map(|c| (c.seed, c.sample_index))
}

impl DatasetState {
    /// Whether the worker is busy with a Magpie, judge or synthesis run for this page.
    pub fn busy(&self) -> bool {
        self.status.with(|s| s.running_id().is_some())
            || self.judge.with(|j| j.is_some())
            || self.synth.status.with(|s| s.running_id().is_some())
    }

    fn changed(&self, f: impl FnOnce(&mut Dirty)) {
        self.dirty.update_value(f);
        self.version.update(|v| *v += 1);
    }

    /// Adds `row`, or replaces the row with its id. A run's rows keep sample order: one that fills a gap (a resumed
    /// run's) goes before the first later row of the same seed. Returns whether it was new.
    pub fn put_row(&self, row: dataset::Row) -> bool {
        let id = row.id.clone();
        let mut new = false;
        self.rows.update(|rows| {
            if let Some(at) = rows.iter().position(|r| r.id == row.id) {
                rows[at] = row;
                return;
            }
            new = true;
            let at = sample_of(&row).and_then(|(seed, index)| {
                rows.iter().position(|r| sample_of(r).is_some_and(|(s, i)| s == seed && i > index))
            });
            match at {
                Some(at) => rows.insert(at, row),
                None => rows.push(row),
            }
        });
        self.changed(|d| {
            d.deleted.remove(&id);
            d.put.insert(id);
        });
        new
    }

    /// Sets the first instruction and the first response of the row `id` (its other turns stay).
    pub fn edit_row(&self, id: &str, instruction: String, response: String) {
        self.rows.update(|rows| {
            if let Some(row) = rows.iter_mut().find(|r| r.id == id) {
                set_first(&mut row.conversations, dataset::row::HUMAN, instruction);
                set_first(&mut row.conversations, dataset::row::GPT, response);
                row.refresh_mirrors();
            }
        });
        self.changed(|d| {
            d.put.insert(id.to_string());
        });
    }

    pub fn set_tags(&self, id: &str, tags: dataset::Tags) {
        let mut found = false;
        self.rows.update(|rows| {
            if let Some(row) = rows.iter_mut().find(|r| r.id == id) {
                row.tags = tags;
                found = true;
            }
        });
        if found {
            self.changed(|d| {
                d.put.insert(id.to_string());
            });
        }
    }

    pub fn delete_row(&self, id: &str) {
        self.rows.update(|rows| rows.retain(|r| r.id != id));
        self.changed(|d| {
            d.put.remove(id);
            d.deleted.insert(id.to_string());
        });
    }

    /// Empties the dataset and forgets the run.
    pub fn clear(&self) {
        self.rows.set(Vec::new());
        self.run.set(None);
        self.progress.set(None);
        self.status.set(RunStatus::Idle);
        self.changed(|d| *d = Dirty { cleared: true, ..Dirty::default() });
    }

    /// Marks the run's settings or state as changed (they are saved with the rows' order).
    pub fn touch(&self) {
        self.changed(|_| {});
    }
}

fn set_first(turns: &mut Vec<dataset::Turn>, from: &str, value: String) {
    match turns.iter_mut().find(|t| t.from == from) {
        Some(t) => t.value = value,
        None => turns.push(dataset::Turn::new(from, value)),
    }
}

/// Creates and provides the dataset's state (called by `provide_state`).
fn provide_dataset_state() {
    provide_context(DatasetState {
        rows: RwSignal::new(Vec::new()),
        status: RwSignal::new(RunStatus::Idle),
        form: RwSignal::new(crate::datasets::RunSettings {
            settings: engine::magpie::MagpieSettings::default(),
            n: 20,
            batch: 0,
        }),
        system_choice: RwSignal::new(SystemChoice::None),
        custom_system: RwSignal::new(String::new()),
        run: RwSignal::new(None),
        progress: RwSignal::new(None),
        pre_query: RwSignal::new(PreQueryInfo::default()),
        judge: RwSignal::new(None),
        synth: SynthState {
            id: RwSignal::new(0),
            text: RwSignal::new(String::new()),
            settings: RwSignal::new(engine::synth::SynthSettings::default()),
            status: RwSignal::new(RunStatus::Idle),
            results: RwSignal::new(Vec::new()),
            total: RwSignal::new(0),
            stats: RwSignal::new(None),
        },
        storage_error: RwSignal::new(None),
        notice: RwSignal::new(None),
        loaded: RwSignal::new(false),
        dirty: StoredValue::new_local(Dirty::default()),
        version: RwSignal::new(0),
        run_ids: StoredValue::new_local(Vec::new()),
    });
}

/// The main area's views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Chat,
    Magpie,
    Synth,
    Train,
    Compare,
}

/// The view the nav shows (a share link restores it too).
#[derive(Clone, Copy)]
pub struct ActiveView(pub RwSignal<View>);

/// A share link or `.aviary.json` opened in this page: what it holds until the user accepts or dismisses it, and
/// what became of it.
#[derive(Clone, Copy)]
pub struct ShareInbox {
    /// Shown for the user to accept; nothing of it is applied, and nothing loaded, before that.
    pub incoming: RwSignal<Option<share::ShareState>>,
    /// Why the last link or file could not be opened, in words for the person who clicked it.
    pub error: RwSignal<Option<String>>,
    /// The last accepted demo's conversation length, while Replay makes sense (its last reply is still the link's).
    pub restored: RwSignal<Option<usize>>,
    /// What the last accepted link could not bring (a model that was a local file).
    pub notes: RwSignal<Vec<String>>,
}

fn provide_share_state() {
    provide_context(ActiveView(RwSignal::new(View::Chat)));
    provide_context(ShareInbox {
        incoming: RwSignal::new(None),
        error: RwSignal::new(None),
        restored: RwSignal::new(None),
        notes: RwSignal::new(Vec::new()),
    });
}

/// How a training run stands in the page.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainStatus {
    Idle,
    /// Asked for; `id` tags the worker's events for the run.
    Running { id: u64 },
    /// Pause asked for: the worker finishes the current step and writes a checkpoint.
    Pausing { id: u64 },
    /// Cancel asked for: as Pausing, then the checkpoint is deleted.
    Cancelling { id: u64 },
    /// Stopped with a checkpoint to resume from.
    Paused,
    Done,
    Failed(String),
}

impl TrainStatus {
    pub fn id(&self) -> Option<u64> {
        match self {
            TrainStatus::Running { id } | TrainStatus::Pausing { id } | TrainStatus::Cancelling { id } => Some(*id),
            _ => None,
        }
    }
}

/// What the worker said about the run as it started.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRunInfo {
    pub name: String,
    pub total_steps: u64,
    pub train_examples: usize,
    pub val_examples: usize,
    pub truncated: usize,
}

/// The Train view's state: the form (a job without its records), the run, its losses, and stored checkpoints.
#[derive(Clone, Copy)]
pub struct TrainState {
    pub status: RwSignal<TrainStatus>,
    pub form: RwSignal<engine::train::job::TrainJob>,
    /// Rows imported into the Train view itself (JSONL), when the user picks them over the Magpie dataset.
    pub imported: RwSignal<Option<(String, Vec<engine::train::data::Record>)>>,
    /// Whether the next run trains on the imported rows rather than the Magpie dataset.
    pub use_imported: RwSignal<bool>,
    /// A file with bad lines, waiting for the user to skip them or drop the file.
    pub pending_import: RwSignal<Option<PendingImport>>,
    pub run: RwSignal<Option<TrainRunInfo>>,
    /// (step, train loss) and (step, validation loss).
    pub losses: RwSignal<Vec<(u64, f32)>>,
    pub val_losses: RwSignal<Vec<(u64, f32)>>,
    pub step: RwSignal<u64>,
    /// (tokens per second, seconds left).
    pub speed: RwSignal<Option<(f64, f64)>>,
    pub checkpoints: RwSignal<Vec<engine::train::job::CheckpointInfo>>,
    /// Adapters trained in this page (worker ids and names), for export.
    pub trained: RwSignal<Vec<(u64, String)>>,
    pub notice: RwSignal<Option<String>>,
}

/// An imported dataset with lines that could not be read: its good records, and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingImport {
    pub file: String,
    pub records: Vec<engine::train::data::Record>,
    /// The bad lines' count and the first few, named.
    pub bad_lines: usize,
    pub first_bad: Vec<String>,
}

/// One answer the Compare view shows.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub index: usize,
    pub side: engine::protocol::CompareSide,
    pub answer: String,
    pub pieces: Vec<String>,
    pub texts: std::collections::BTreeMap<u32, String>,
    pub comparison: engine::compare::Comparison,
    /// The judge's score and words, once it has answered (None in the pair: no number in its answer).
    pub score: Option<(Option<u8>, String)>,
}

/// The Compare view's state.
#[derive(Clone, Copy)]
pub struct CompareState {
    /// The run going, if any.
    pub running: RwSignal<Option<u64>>,
    pub instructions: RwSignal<String>,
    /// Each side: adapter ids with scales (none = the base model).
    pub sides: RwSignal<[Vec<engine::session::LoraChoice>; 2]>,
    pub max_tokens: RwSignal<usize>,
    /// Side A as another model (its URL), a teacher beside the loaded student; None: side A is `sides[0]`.
    pub teacher: RwSignal<Option<String>>,
    /// Who scores the answers with ch. 7's judge prompt (None: nobody).
    pub judge: RwSignal<Option<engine::protocol::Judge>>,
    /// The teacher's loading progress during a run: (stage, done, total).
    pub loading: RwSignal<Option<(engine::protocol::Stage, u64, u64)>>,
    pub rows: RwSignal<Vec<CompareRow>>,
    pub error: RwSignal<Option<String>>,
}

/// Creates and provides the Train and Compare views' state (called by `provide_state`).
fn provide_train_state() {
    use engine::train::job::TrainJob;
    provide_context(TrainState {
        status: RwSignal::new(TrainStatus::Idle),
        form: RwSignal::new(TrainJob {
            name: "my-adapter".into(),
            records: Vec::new(),
            style: engine::train::data::PromptStyle::Chat,
            mask_instructions: true,
            max_len: 256,
            settings: engine::train::TrainSettings::default(),
            checkpoint_every: 10,
        }),
        imported: RwSignal::new(None),
        use_imported: RwSignal::new(false),
        pending_import: RwSignal::new(None),
        run: RwSignal::new(None),
        losses: RwSignal::new(Vec::new()),
        val_losses: RwSignal::new(Vec::new()),
        step: RwSignal::new(0),
        speed: RwSignal::new(None),
        checkpoints: RwSignal::new(Vec::new()),
        trained: RwSignal::new(Vec::new()),
        notice: RwSignal::new(None),
    });
    provide_context(CompareState {
        running: RwSignal::new(None),
        instructions: RwSignal::new(String::new()),
        sides: RwSignal::new([Vec::new(), Vec::new()]),
        max_tokens: RwSignal::new(48),
        teacher: RwSignal::new(None),
        judge: RwSignal::new(None),
        loading: RwSignal::new(None),
        rows: RwSignal::new(Vec::new()),
        error: RwSignal::new(None),
    });
}
