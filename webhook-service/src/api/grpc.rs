//! The `sdserve.v1.Jobs` gRPC service: translation between protobuf and [`JobService`].

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sdserve_proto::v1 as pb;
use sdserve_proto::v1::jobs_server::Jobs;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::validate::{self, FieldError, Submission, UrlRules};
use super::convert;
use crate::jobs::{new_job_id, JobError, JobService};

/// The gRPC face of the job service.
pub struct JobsApi {
    jobs: Arc<JobService>,
    rules: UrlRules,
}

impl JobsApi {
    /// Serves `jobs` with the URL rules of the configuration.
    pub fn new(jobs: Arc<JobService>, rules: UrlRules) -> Self {
        Self { jobs, rules }
    }
}

impl From<FieldError> for Status {
    fn from(e: FieldError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl From<JobError> for Status {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound(_) | JobError::DeliveryNotFound(_) => Status::not_found(e.to_string()),
            JobError::Store(err) => {
                tracing::error!(error = %err, "store error");
                Status::unavailable("the job store is unavailable; try again")
            }
        }
    }
}

fn required_id<'a>(field: &str, id: &'a str) -> Result<&'a str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: is required")));
    }
    Ok(id)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Jobs for JobsApi {
    async fn submit_job(&self, request: Request<pb::SubmitJobRequest>) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let r = request.into_inner();
        let params = r.params.ok_or_else(|| Status::invalid_argument("params: is required"))?;
        let webhook = r.webhook.ok_or_else(|| Status::invalid_argument("webhook: is required"))?;
        let vendor_context = match r.vendor_context_json.as_str() {
            "" => serde_json::Value::Null,
            raw => serde_json::from_str(raw)
                .map_err(|e| Status::invalid_argument(format!("vendor_context_json: is not JSON ({e})")))?,
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
        };
        let job = validate::submission(submission, self.rules, new_job_id(), self.jobs.clock.now_ms())?;
        let inserted = self.jobs.submit(job).await?;
        Ok(Response::new(pb::SubmitJobResponse { job_id: inserted.id, deduplicated: inserted.deduplicated }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = required_id("job_id", &request.get_ref().job_id)?;
        Ok(Response::new(convert::job(&self.jobs.get(id).await?)))
    }

    async fn cancel_job(&self, request: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = required_id("job_id", &request.get_ref().job_id)?;
        Ok(Response::new(convert::job(&self.jobs.cancel(id).await?)))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(&self, request: Request<pb::WatchJobRequest>) -> Result<Response<EventStream>, Status> {
        let id = required_id("job_id", &request.get_ref().job_id)?.to_owned();
        let mut changes = self.jobs.events.subscribe();
        let first = self.jobs.get(&id).await?;
        let jobs = self.jobs.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = convert::job(&first);
            let mut done = first.status.is_final();
            if tx.send(Ok(pb::JobEvent { job: Some(last.clone()) })).await.is_err() {
                return;
            }
            while !done {
                match changes.recv().await {
                    Ok(changed) if changed != id => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
                let job = match jobs.get(&id).await {
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
        let id = required_id("job_id", &request.get_ref().job_id)?;
        self.jobs.get(id).await?;
        let deliveries = self.jobs.store.list_deliveries(id).await.map_err(JobError::from)?;
        Ok(Response::new(pb::ListDeliveriesResponse { deliveries: deliveries.iter().map(convert::delivery).collect() }))
    }

    async fn redeliver(&self, request: Request<pb::RedeliverRequest>) -> Result<Response<pb::Delivery>, Status> {
        let id = required_id("delivery_id", &request.get_ref().delivery_id)?;
        let record = self.jobs.redeliver(id).await?;
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
