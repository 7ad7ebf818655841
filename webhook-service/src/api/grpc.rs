//! The `sdserve.v1.Jobs` gRPC service: translation between protobuf and [`JobService`].

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sdserve_proto::v1 as pb;
use sdserve_proto::v1::jobs_server::Jobs;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use tonic_types::{ErrorDetails, StatusExt};

use super::convert;
use super::validate::{FieldError, Submission};
use crate::auth::{AuthError, Authenticated, Caller};
use crate::jobs::{AcceptError, JobError, JobService};

/// The gRPC face of the job service.
pub struct JobsApi {
    jobs: Arc<JobService>,
}

impl JobsApi {
    /// Serves `jobs`.
    pub fn new(jobs: Arc<JobService>) -> Self {
        Self { jobs }
    }
}

/// `INVALID_ARGUMENT` with the message and a `google.rpc.BadRequest` detail naming the field,
/// so clients can point at the field without parsing text.
impl From<FieldError> for Status {
    fn from(e: FieldError) -> Self {
        let message = e.to_string();
        Status::with_error_details(
            tonic::Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request_violation(e.field, e.rule),
        )
    }
}

impl From<JobError> for Status {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound(_) | JobError::DeliveryNotFound(_) => {
                Status::not_found(e.to_string())
            }
            JobError::Forbidden(message) => Status::permission_denied(message),
            JobError::Unavailable(message) => Status::unavailable(message),
            JobError::Conflict(message) => Status::failed_precondition(message),
            JobError::Limited {
                message,
                retry_after_s,
            } => {
                let mut status = Status::resource_exhausted(message);
                status
                    .metadata_mut()
                    .insert("retry-after", retry_after_s.into());
                status
            }
            JobError::Store(err) => {
                tracing::error!(error = %err, "store error");
                Status::unavailable("the job store is unavailable; try again")
            }
        }
    }
}

impl From<AcceptError> for Status {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::Invalid(field) => field.into(),
            AcceptError::Limited {
                rule,
                retry_after_s,
            } => {
                let mut status = Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    rule,
                    ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(
                        retry_after_s,
                    ))),
                );
                status
                    .metadata_mut()
                    .insert("retry-after", retry_after_s.into());
                status
            }
            AcceptError::Conflict(..) => Status::already_exists(e.to_string()),
            AcceptError::Job(job) => job.into(),
        }
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable => Status::unavailable(e.to_string()),
            AuthError::Missing | AuthError::Invalid => Status::unauthenticated(e.to_string()),
        }
    }
}

/// The caller the auth layer found for this call (metadata `authorization` or `x-api-key`).
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    match request.extensions().get::<Authenticated>() {
        Some(Authenticated(outcome)) => outcome.clone().map_err(Status::from),
        None => Err(AuthError::Missing.into()),
    }
}

fn required_id<'a>(field: &str, id: &'a str) -> Result<&'a str, Status> {
    if id.is_empty() {
        return Err(FieldError {
            field: field.to_owned(),
            rule: "is required".to_owned(),
        }
        .into());
    }
    Ok(id)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Jobs for JobsApi {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let missing = |field: &str| {
            Status::from(FieldError {
                field: field.to_owned(),
                rule: "is required".to_owned(),
            })
        };
        let params = r.params.ok_or_else(|| missing("params"))?;
        let webhook = r.webhook.ok_or_else(|| missing("webhook"))?;
        let vendor_context = match r.vendor_context_json.as_str() {
            "" => serde_json::Value::Null,
            raw => serde_json::from_str(raw).map_err(|e| {
                Status::from(FieldError {
                    field: "vendor_context_json".into(),
                    rule: format!("is not JSON ({e})"),
                })
            })?,
        };
        let submission = Submission {
            params,
            url: webhook.url,
            secret: webhook.secret,
            format: webhook.format,
            events: webhook.events,
            signing_secret: webhook.signing_secret,
            idempotency_key: r.idempotency_key,
            vendor_context,
            ..Submission::default()
        };
        let inserted = self.jobs.accept(&caller, submission).await?;
        Ok(Response::new(pb::SubmitJobResponse {
            job_id: inserted.id,
            deduplicated: inserted.deduplicated,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&request)?;
        let id = required_id("job_id", &request.get_ref().job_id)?;
        Ok(Response::new(convert::job(
            &self.jobs.get(&caller, id).await?,
        )))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller(&request)?;
        let id = required_id("job_id", &request.get_ref().job_id)?;
        Ok(Response::new(convert::job(
            &self.jobs.cancel(&caller, id).await?,
        )))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let id = required_id("job_id", &request.get_ref().job_id)?.to_owned();
        let mut changes = self.jobs.subscribe();
        let first = self.jobs.get(&caller, &id).await?;
        let jobs = self.jobs.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = convert::job(&first);
            let mut done = first.status.is_final();
            if tx
                .send(Ok(pb::JobEvent {
                    job: Some(last.clone()),
                }))
                .await
                .is_err()
            {
                return;
            }
            while !done {
                match changes.recv().await {
                    Ok(changed) if changed != id => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
                let job = match jobs.get(&caller, &id).await {
                    Ok(job) => job,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                done = job.status.is_final();
                let view = convert::job(&job);
                if view != last {
                    last = view.clone();
                    if tx.send(Ok(pb::JobEvent { job: Some(view) })).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let caller = caller(&request)?;
        let id = required_id("job_id", &request.get_ref().job_id)?;
        let deliveries = self.jobs.deliveries(&caller, id).await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: deliveries.iter().map(convert::delivery).collect(),
        }))
    }

    async fn redeliver(
        &self,
        request: Request<pb::RedeliverRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let caller = caller(&request)?;
        let id = required_id("delivery_id", &request.get_ref().delivery_id)?;
        let record = self.jobs.redeliver(&caller, id).await?;
        Ok(Response::new(convert::delivery(&record)))
    }
}

/// A stream fed by a task through a bounded channel; the task stops when the client goes.
fn async_stream<F, Fut>(producer: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::JobEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
