FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY course ./course
COPY worker ./worker
RUN pip install --no-cache-dir ".[postgres]"
COPY lessons ./lessons
RUN useradd --create-home homeward
USER homeward
ENV COURSE_LESSONS_DIR=/app/lessons
EXPOSE 8000
CMD ["course", "web", "--host", "0.0.0.0", "--port", "8000"]
