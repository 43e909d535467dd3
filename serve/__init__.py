"""The routing service: FastAPI app over Predictor and Router (installed as kefu_router.serve).

    settings.py  environment settings (KEFU_ROUTER_*)
    batcher.py   micro-batching of concurrent requests into one ONNX run
    schemas.py   request and response models, with Chinese examples and the settings' limits
    intake.py    what a /v1 request passes first: API key, content type, strict UTF-8 JSON body
    routes.py    /v1/classify, /v1/route, /v1/model, /healthz, /readyz, /metrics
    app.py       app factory: lifespan (model load, warm-up), body limit, auth, metrics, logs
"""
