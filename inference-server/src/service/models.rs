//! The models a server loads at start (`--model PATH[=NAME]`, several allowed, the first is
//! the default), looked up by the name callers pass in `GenerationParams.model`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::engine::Device;
use crate::model::weights::{Checkpoint, Variant};
use crate::pipeline::{Pipeline, Precision};
use crate::service::ServiceError;

/// One `--model PATH[=NAME]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// A diffusers folder or a single-file `.safetensors`.
    pub path: PathBuf,
    /// The name callers use; `None` = the file or folder stem.
    pub name: Option<String>,
}

impl FromStr for ModelSpec {
    type Err = String;

    /// Parses `PATH` or `PATH=NAME`; the last `=` separates the name (paths may contain `=`
    /// only when a name is given).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, name) = match s.rsplit_once('=') {
            Some((path, name)) => (path, Some(name.trim())),
            None => (s, None),
        };
        if path.is_empty() {
            return Err(format!("model {s:?}: the path is empty"));
        }
        if name == Some("") {
            return Err(format!("model {s:?}: the name after '=' is empty"));
        }
        Ok(ModelSpec {
            path: PathBuf::from(path),
            name: name.map(str::to_owned),
        })
    }
}

/// A loaded model, ready to generate.
#[derive(Debug)]
pub struct LoadedModel {
    /// The name callers pass in `GenerationParams.model` (also the infotext's `Model:`).
    pub name: String,
    /// `"sd1"` or `"sd2"`.
    pub variant: &'static str,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The networks.
    pub pipeline: Pipeline,
}

/// Every loaded model, the default first.
#[derive(Debug)]
pub struct Models {
    list: Vec<Arc<LoadedModel>>,
}

impl Models {
    /// Loads every model of `specs` onto `device` (blocking: seconds to minutes for real
    /// checkpoints). Fails on the first model that cannot be loaded, or on a repeated name.
    pub fn load(
        specs: &[ModelSpec],
        device: &Device,
        precision: Precision,
    ) -> Result<Models, ServiceError> {
        if specs.is_empty() {
            return Err(ServiceError::Config(
                "at least one --model is required".into(),
            ));
        }
        let mut list: Vec<Arc<LoadedModel>> = Vec::with_capacity(specs.len());
        for spec in specs {
            let fail = |e: String| ServiceError::Model {
                path: spec.path.clone(),
                message: e,
            };
            let checkpoint = Checkpoint::open(&spec.path).map_err(|e| fail(e.to_string()))?;
            let variant = match checkpoint.variant {
                Variant::Sd1 => "sd1",
                Variant::Sd2 => "sd2",
            };
            drop(checkpoint);
            let pipeline = Pipeline::load_with(&spec.path, device, precision)
                .map_err(|e| fail(e.to_string()))?;
            let name = spec
                .name
                .clone()
                .unwrap_or_else(|| pipeline.name().to_owned());
            if list.iter().any(|m| m.name == name) {
                return Err(ServiceError::Config(format!(
                    "two models are named {name:?}; name them with PATH=NAME"
                )));
            }
            tracing::info!(model = %name, variant, path = %spec.path.display(), "model loaded");
            list.push(Arc::new(LoadedModel {
                name,
                variant,
                path: spec.path.clone(),
                pipeline,
            }));
        }
        Ok(Models { list })
    }

    /// The model named `name`; an empty name selects the default (first) model.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        if name.is_empty() {
            return self.list.first().cloned();
        }
        self.list.iter().find(|m| m.name == name).cloned()
    }

    /// Every model, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedModel>> {
        self.list.iter()
    }

    /// The names of every model, comma-separated (for error messages).
    pub fn names(&self) -> String {
        self.list
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_name() {
        let spec: ModelSpec = "/m/tiny=fast".parse().unwrap();
        assert_eq!(
            spec,
            ModelSpec {
                path: "/m/tiny".into(),
                name: Some("fast".into())
            }
        );
        let spec: ModelSpec = "/m/tiny".parse().unwrap();
        assert_eq!(spec.name, None);
        assert!("=x".parse::<ModelSpec>().is_err());
        assert!("/m=".parse::<ModelSpec>().is_err());
    }
}
