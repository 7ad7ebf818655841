//! Black-box tests of `sdserve.v1.Inference`: the real service on 127.0.0.1:0 with the tiny
//! SD 1 test model (64×64, a few steps), driven through the generated gRPC client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use inference_server::engine::Device;
use inference_server::model::testmodel::write_test_model;
use inference_server::model::weights::{Layout, StoredDType, Variant};
use inference_server::service::{ModelSpec, ServiceConfig};
use sdserve_proto::v1 as pb;
use sdserve_proto::v1::generate_event::Event;
use sdserve_proto::v1::inference_client::InferenceClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), inference_server::service::ServiceError>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> anyhow::Result<Server> {
        Self::start_with_queue(64).await
    }

    async fn start_with_queue(max_queue: usize) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let path = write_test_model(
            &dir.path().join("tiny-sd1"),
            Variant::Sd1,
            Layout::Diffusers,
            StoredDType::F32,
        )?;
        let config = ServiceConfig {
            models: vec![ModelSpec {
                path,
                name: Some("tiny".into()),
            }],
            device: Device::Cpu,
            precision: None,
            max_queue,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(inference_server::service::run(
            config,
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Server {
            addr,
            stop: Some(stop),
            task,
            _dir: dir,
        })
    }

    async fn client(&self) -> anyhow::Result<InferenceClient<Channel>> {
        Ok(InferenceClient::connect(format!("http://{}", self.addr))
            .await?
            .max_decoding_message_size(64 << 20))
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.task).await???;
        Ok(())
    }
}

fn request(steps: u32, seed: i64) -> pb::GenerateRequest {
    pb::GenerateRequest {
        params: Some(pb::GenerationParams {
            prompt: "a tiny red fox".into(),
            seed: Some(seed),
            steps: Some(steps),
            width: Some(64),
            height: Some(64),
            sampler_name: "Euler".into(),
            ..Default::default()
        }),
        preview_every: 0,
        request_id: format!("test-{seed}"),
    }
}

/// Every event of a stream until it ends.
async fn collect(mut stream: tonic::Streaming<pb::GenerateEvent>) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    while let Some(event) =
        tokio::time::timeout(Duration::from_secs(300), stream.message()).await??
    {
        events.push(
            event
                .event
                .ok_or_else(|| anyhow::anyhow!("event without a payload"))?,
        );
    }
    Ok(events)
}

fn parameters_chunk(png_bytes: &[u8]) -> anyhow::Result<String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![
        0;
        reader
            .output_buffer_size()
            .ok_or_else(|| anyhow::anyhow!("png too large"))?
    ];
    let frame = reader.next_frame(&mut buf)?;
    assert_eq!((frame.width, frame.height), (64, 64));
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == "parameters");
    Ok(text.map(|c| c.text.clone()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_resource_exhausted_and_serves_the_rest() -> anyhow::Result<()> {
    let server = Server::start_with_queue(1).await?;
    let mut client = server.client().await?;
    let mut running = client.generate(request(150, 1)).await?.into_inner();
    // Once it runs, one more request may wait; a third is refused at once.
    while !matches!(
        running.message().await?.and_then(|e| e.event),
        Some(Event::Started(_))
    ) {}
    let waiting = client.generate(request(2, 2)).await?.into_inner();
    let refused = client
        .generate(request(2, 3))
        .await
        .expect_err("a third request is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("the queue is full"),
        "{}",
        refused.message()
    );
    drop(running); // cancels the long one; the waiting one then runs to its end
    let events = collect(waiting).await?;
    assert!(
        matches!(events.last(), Some(Event::Completed(_))),
        "{:?}",
        events.last()
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_streams_every_event_in_order() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut client = server.client().await?;
    let mut req = request(3, 42);
    req.preview_every = 1;
    let events = collect(client.generate(req).await?.into_inner()).await?;
    assert!(
        matches!(events[0], Event::Queued(pb::Queued { position: 0 })),
        "{:?}",
        events[0]
    );
    match &events[1] {
        Event::Started(s) => assert_eq!((s.model.as_str(), s.seed), ("tiny", 42)),
        other => panic!("expected started, got {other:?}"),
    }
    for (i, event) in events[2..5].iter().enumerate() {
        match event {
            Event::Progress(p) => {
                assert_eq!((p.step, p.total), (i as u32 + 1, 3));
                // Previews exist once the model has run (after step 1), and are PNGs.
                if !p.preview_png.is_empty() {
                    assert_eq!(&p.preview_png[1..4], b"PNG");
                }
            }
            other => panic!("expected progress, got {other:?}"),
        }
    }
    match &events[5] {
        Event::Image(image) => {
            assert_eq!((image.index, image.seed), (0, 42));
            let text = parameters_chunk(&image.png)?;
            assert_eq!(text, image.infotext);
            assert!(
                text.starts_with("a tiny red fox\nSteps: 3, Sampler: Euler"),
                "{text}"
            );
            assert!(
                text.contains("Seed: 42") && text.contains("Model: tiny"),
                "{text}"
            );
        }
        other => panic!("expected an image, got {other:?}"),
    }
    match &events[6] {
        Event::Completed(done) => {
            let info: serde_json::Value = serde_json::from_str(&done.info_json)?;
            assert_eq!(info["all_seeds"], serde_json::json!([42]));
            assert!(done.timings.is_some());
        }
        other => panic!("expected completed, got {other:?}"),
    }
    assert_eq!(events.len(), 7);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_request_waits_its_turn() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut client = server.client().await?;
    // Long enough that the other two arrive while it runs.
    let mut first = client.generate(request(30, 1)).await?.into_inner();
    let mut seen = Vec::new();
    while let Some(e) = first.message().await? {
        let started = matches!(e.event, Some(Event::Started(_)));
        seen.push(e.event);
        if started {
            break;
        }
    }
    let second = client.generate(request(2, 2)).await?.into_inner();
    let third = client.generate(request(2, 3)).await?.into_inner();
    let (first_rest, second_events, third_events) =
        tokio::join!(collect(first), collect(second), collect(third));
    let second_events = second_events?;
    assert!(
        matches!(second_events[0], Event::Queued(pb::Queued { position: 1 })),
        "{:?}",
        second_events[0]
    );
    assert!(
        matches!(second_events[1], Event::Started(_)),
        "{:?}",
        second_events[1]
    );
    assert!(matches!(second_events.last(), Some(Event::Completed(_))));
    // The third moves up when the second starts.
    let third_events = third_events?;
    assert!(
        matches!(third_events[0], Event::Queued(pb::Queued { position: 2 })),
        "{:?}",
        third_events[0]
    );
    assert!(
        matches!(third_events[1], Event::Queued(pb::Queued { position: 1 })),
        "{:?}",
        third_events[1]
    );
    assert!(
        matches!(third_events[2], Event::Started(_)),
        "{:?}",
        third_events[2]
    );
    assert!(matches!(third_events.last(), Some(Event::Completed(_))));
    assert!(matches!(first_rest?.last(), Some(Event::Completed(_))));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_and_unknown_models_are_refused_by_name() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut client = server.client().await?;
    let mut req = request(2, 1);
    if let Some(p) = req.params.as_mut() {
        p.width = Some(65);
    }
    let status = client
        .generate(req)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("width 65 was accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("width"), "{}", status.message());

    let mut req = request(2, 1);
    if let Some(p) = req.params.as_mut() {
        p.sampler_name = "Nonsense".into();
    }
    let status = client
        .generate(req)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("bad sampler accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("sampler_name"),
        "{}",
        status.message()
    );

    let mut req = request(2, 1);
    if let Some(p) = req.params.as_mut() {
        p.model = "missing".into();
    }
    let status = client
        .generate(req)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("unknown model accepted"))?;
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains("model"), "{}", status.message());
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn img2img_from_a_jpeg_of_another_size() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut client = server.client().await?;
    let jpeg = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/resize_src.jpg"),
    )?;
    let mut req = request(4, 5);
    if let Some(p) = req.params.as_mut() {
        p.init_image = jpeg;
        p.denoising_strength = Some(0.5);
    }
    let events = collect(client.generate(req).await?.into_inner()).await?;
    let image = events
        .iter()
        .find_map(|e| {
            if let Event::Image(i) = e {
                Some(i)
            } else {
                None
            }
        })
        .ok_or_else(|| anyhow::anyhow!("no image in {events:?}"))?;
    // The 50x38 JPEG was resized to the requested 64x64 (parameters_chunk checks the size).
    let text = parameters_chunk(&image.png)?;
    assert!(
        text.contains("Denoising strength: 0.5") && text.contains("Seed: 5"),
        "{text}"
    );
    assert!(
        matches!(events.last(), Some(Event::Completed(_))),
        "{:?}",
        events.last()
    );

    let mut req = request(4, 5);
    if let Some(p) = req.params.as_mut() {
        p.init_image = b"GIF89a not really".to_vec();
    }
    let status = client
        .generate(req)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a non-image init_image was accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("params.init_image: must be a PNG or JPEG image"),
        "{}",
        status.message()
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_generation() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut client = server.client().await?;
    let mut long = request(150, 7);
    if let Some(p) = long.params.as_mut() {
        p.n_iter = Some(100);
    }
    let mut stream = client.generate(long).await?.into_inner();
    let started = Instant::now();
    loop {
        match stream.message().await? {
            Some(pb::GenerateEvent {
                event: Some(Event::Progress(p)),
            }) if p.step >= 2 => break,
            Some(_) => {}
            None => anyhow::bail!("the long generation ended early"),
        }
    }
    let per_step = started.elapsed() / 2;
    drop(stream);
    let next = Instant::now();
    let events = collect(client.generate(request(2, 8)).await?.into_inner()).await?;
    assert!(
        matches!(events.last(), Some(Event::Completed(_))),
        "{events:?}"
    );
    // The cancelled one had 15,000 steps left: the next started within a few of its steps.
    assert!(
        next.elapsed() < per_step * 20 + Duration::from_secs(10),
        "took {:?}",
        next.elapsed()
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_models_and_reports_health() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let mut client = server.client().await?;
    let models = client
        .list_models(pb::ListModelsRequest {})
        .await?
        .into_inner()
        .models;
    assert_eq!(models.len(), 1);
    assert_eq!(
        (models[0].name.as_str(), models[0].variant.as_str()),
        ("tiny", "sd1")
    );
    assert!(models[0].path.ends_with("tiny-sd1"), "{}", models[0].path);

    let channel = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "sdserve.v1.Inference"] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    server.stop().await
}
