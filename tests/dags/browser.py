"""A real browser for the end-to-end tests: Debian's chromium driven by its chromedriver
through Selenium (`make browser` installs both when absent), headless, with each step's
screenshot kept under test-artifacts/ (SEEKFORGE_TEST_ARTIFACTS overrides) for a person
to look at after the run."""

import os
import shutil
import time

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def missing() -> str | None:
    """Why no browser can run here (None when one can)."""
    if not any(os.path.exists(p) for p in CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        return ("NO BROWSER: Debian's chromium and chromedriver are not installed and `make browser` could not "
                "install them (it needs root and the Debian registry); the browser journey did not run")
    return None


def artifacts_dir(name: str) -> str:
    root = os.environ.get("SEEKFORGE_TEST_ARTIFACTS") or os.path.join(REPO, "test-artifacts")
    path = os.path.join(root, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


class Browser:
    """The driver, plus the few moves the journey needs: open a page, wait for text,
    click a control by its visible text or label, and screenshot a step."""

    def __init__(self, screenshots: str, timeout: float = 60):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(flag)
        options.binary_location = next(p for p in CHROMIUM if os.path.exists(p))
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.screenshots, self.timeout, self.steps = screenshots, timeout, 0

    def quit(self) -> None:
        self.driver.quit()

    def open(self, url: str) -> None:
        self.driver.get(url)

    def text(self) -> str:
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.TAG_NAME, "body").text

    def wait_for_text(self, *needles: str, timeout: float | None = None, reload_every: float | None = None) -> str:
        """Waits until the page shows every needle (reloading every `reload_every` s for
        pages that do not refresh themselves); returns the page's text."""
        deadline = time.time() + (timeout or self.timeout)
        last_reload = time.time()
        while True:
            try:
                text = self.text()
            except Exception:   # the page is between two renders
                text = ""
            if all(n in text for n in needles):
                return text
            if time.time() > deadline:
                self.shot("timeout")
                missing = [n for n in needles if n not in text]
                raise AssertionError(f"{self.driver.current_url} never showed {missing}; it shows:\n{text[-3000:]}")
            if reload_every and time.time() - last_reload > reload_every:
                self.driver.refresh()
                last_reload = time.time()
            time.sleep(0.5)

    def element(self, css: str = None, xpath: str = None, timeout: float | None = None):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait
        locator = (By.XPATH, xpath) if xpath else (By.CSS_SELECTOR, css)
        return WebDriverWait(self.driver, timeout or self.timeout).until(
            expected_conditions.visibility_of_element_located(locator))

    def button(self, text: str = None, label: str = None):
        """The last visible button with this text (a dialog's controls come after the page's) or aria-label."""
        xpath = f"//button[@aria-label={label!r}]" if label else f"//button[normalize-space()={text!r}]"
        self.element(xpath=xpath)
        from selenium.webdriver.common.by import By
        return [b for b in self.driver.find_elements(By.XPATH, xpath) if b.is_displayed()][-1]

    def reveal(self, element) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)

    def click(self, element, attempts: int = 3) -> None:
        """A real click; when a popup covers the element (MLflow greets a first visit with
        one), close the popup as a user would, and click again. A link that opens a new
        tab is followed there."""
        from selenium.common.exceptions import ElementClickInterceptedException
        before = set(self.driver.window_handles)
        for attempt in range(attempts):
            self.reveal(element)
            try:
                element.click()
                break
            except ElementClickInterceptedException:
                if attempt == attempts - 1 or not self.close_popup():
                    raise
        opened = [h for h in self.driver.window_handles if h not in before]
        if opened:   # a link with target=_blank (MLflow's markdown): follow it to its tab
            self.driver.switch_to.window(opened[-1])

    def close_popup(self) -> bool:
        from selenium.webdriver.common.by import By
        closers = [e for e in self.driver.find_elements(By.CSS_SELECTOR, "[role=dialog] button[aria-label=Close]")
                   if e.is_displayed()]
        if closers:
            self.shot("popup-closed")
            closers[-1].click()
            time.sleep(0.5)
        return bool(closers)

    def link(self, text: str):
        return self.element(xpath=f"//a[normalize-space()={text!r}]")

    def shot(self, name: str) -> str:
        self.steps += 1
        path = os.path.join(self.screenshots, f"{self.steps:02d}-{name}.png")
        self.driver.save_screenshot(path)
        return path
