"""MedLN's Gradio app: `python app.py` (or a Hugging Face Space with app_file: app.py).
Host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; other settings: medln/ui/settings.py."""

from medln import storage

# First, before anything imports huggingface_hub (which reads HF_HOME once): on a Space with
# persistent storage, downloads and runs go to /data (medln/storage.py).
storage.configure()

try:  # ZeroGPU: `spaces` must be imported before anything initialises CUDA (medln/ui/gpu.py)
    import spaces  # noqa: F401
except ImportError:
    pass

from medln.ui import main  # noqa: E402

if __name__ == "__main__":
    main()
