"""MedLN's Gradio app: `python app.py` (or a Hugging Face Space with app_file: app.py).
Host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; other settings: medln/ui/settings.py."""

from medln import storage

# Before gradio and transformers import huggingface_hub, which reads HF_HOME once: on a Space
# with persistent storage, downloads and runs go to /data (medln/storage.py).
storage.configure()

from medln.ui import main  # noqa: E402

if __name__ == "__main__":
    main()
