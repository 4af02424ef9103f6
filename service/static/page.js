// Opening a story fetches its articles from GET /v1/stories/{id}, the same JSON
// the API serves, and lists them with copies folded under the article they copy.
// Every piece of article text goes in through textContent, never as HTML, and a
// link is made only from an http(s) URL.
"use strict";

(function () {
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function webAddress(url) {
    try {
      const parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (error) {
      return null;
    }
  }

  function when(iso) {
    const time = element("time", "published", iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : "time unknown");
    if (iso) time.dateTime = iso;
    return time;
  }

  function titleOf(article) {
    const href = webAddress(article.url);
    const title = element(href ? "a" : "span", "title", article.title);
    if (href) {
      title.href = href;
      title.rel = "noopener noreferrer";
    }
    return title;
  }

  function articleItem(article, className) {
    const item = element("li", className);
    item.append(titleOf(article), " ", element("span", "source", article.source), " ", when(article.published_at));
    if (className === "copy" && typeof article.similarity === "number") {
      item.append(" ", element("span", "similarity", Math.round(article.similarity * 100) + " % the same text"));
    }
    const copies = article.duplicates || [];
    if (copies.length) {
      const list = element("ul", "copies");
      list.setAttribute("aria-label", copies.length === 1 ? "1 copy" : copies.length + " copies");
      copies.forEach((copy) => list.append(articleItem(copy, "copy")));
      item.append(list);
    }
    return item;
  }

  function fail(details, reason) {
    details.querySelector(".articles").replaceChildren(
      element("p", "error", reason + " Close and open the story to try again."));
    details.dataset.state = "failed";
  }

  async function load(details) {
    const box = details.querySelector(".articles");
    details.dataset.state = "loading";
    box.replaceChildren(element("p", "loading", "Loading the articles…"));
    let response;
    try {
      response = await fetch(details.dataset.storyUrl, {headers: {Accept: "application/json"}});
    } catch (error) {
      return fail(details, "The service could not be reached.");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok || !body || !Array.isArray(body.articles)) {
      const message = body && body.error ? body.error.message : "status " + response.status;
      return fail(details, "Could not load the articles: " + message);
    }
    const list = element("ol", "article-list");
    body.articles.forEach((article) => list.append(articleItem(article, "article")));
    box.replaceChildren(list);
    details.dataset.state = "loaded";
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("details[data-story-url]").forEach((details) => {
      details.addEventListener("toggle", () => {
        if (details.open && details.dataset.state !== "loaded" && details.dataset.state !== "loading") load(details);
      });
    });
  });
})();
