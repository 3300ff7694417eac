"""MedLN's Gradio app: `python app.py` (or a Hugging Face Space with app_file: app.py).
Host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; other settings: medln/ui/settings.py."""

from medln.ui import main

if __name__ == "__main__":
    main()
