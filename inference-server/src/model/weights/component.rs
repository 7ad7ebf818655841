//! A weight set read straight from safetensors files, for a component stored on its own (a
//! transformers `model.safetensors`, or the benches' generated text encoder).

use super::{SafetensorsFile, WeightSet};

impl WeightSet {
    /// Every tensor of `files` under its stored name, borrowed from the files' mappings; a
    /// tensor of an unsupported dtype is kept and refused by [`WeightSet::get`] with its name.
    pub fn from_files(files: &[SafetensorsFile]) -> WeightSet {
        let mut set = WeightSet::default();
        for file in files {
            for name in file.names() {
                set.insert(name.to_owned(), file.tensor(name));
            }
        }
        set
    }
}
