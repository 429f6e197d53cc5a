"""What both processes read and write on disk: run and sweep directories, and starting engines."""
