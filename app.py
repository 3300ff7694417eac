"""MedLN's Gradio app for a Hugging Face Space (app_file: app.py): the same as `medln app`."""
from medln.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
