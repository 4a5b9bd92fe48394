"The exit explorer in a real browser: the widgets notebook served by voila, driven in headless Chromium as a person would."
import re, time
from pathlib import Path
import pytest
from browser import chrome, voila, voila_diagnose, ARTIFACTS

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/'nbs'/'06_widgets.ipynb'

def _wait(cond, timeout=240, step=0.5, what='condition'):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            v = cond()
            if v: return v
        except Exception: pass
        time.sleep(step)
    raise TimeoutError(f'timed out waiting for {what}')

def test_explorer_in_voila(tmp_path):
    from mess_fast.search import SearchResult, ExitCache, ExitConfig
    res = SearchResult.load(ROOT/'bench'/'results'/'search.json', ExitCache.load(ROOT/'bench'/'results'/'search_cache.pt'))
    d = chrome(tmp_path)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    ARTIFACTS.mkdir(exist_ok=True)
    def readout(): return d.find_elements(By.CSS_SELECTOR, '.mess-readout')[0].text
    def pareto_src(): return d.find_elements(By.CSS_SELECTOR, '.mess-pareto img')[0].get_attribute('src')
    def numbers_of(text):
        cfg = ExitConfig.from_name(re.search(r'configuration\s+(.+)', text).group(1).strip())
        r = res.evaluate(cfg)
        return cfg, r, f"{r['miou'] * 100:.2f}%" in text and f"{r['latency']:.2f} ms" in text
    try:
        with voila(NB, log_path=ARTIFACTS/'voila.log') as (base, proc):
            rendered = lambda: 'mIoU' in readout() and pareto_src()
            # voila 0.5.13 (nbclient 0.11, jupyter_client 8.10, pyzmq 27.3) sometimes stops streaming the page after
            # the explorer's cell although the kernel has run it: here on 5 of 21 page loads fetched without a browser.
            # The kernel's stacks show it idle, voila's --debug log has the cell's outputs and its idle status, and
            # the server's asyncio tasks show nbclient still waiting for that cell's execute_reply on the shell
            # channel (`shell_channel.get_msg` in `_async_poll_for_reply`, no timeout): a reply the kernel sent and
            # the server's poll never wakes for. A page load that stalls keeps what it showed and what the processes
            # were doing, and the page is loaded again, with a fresh kernel; a normal load renders in 15-35 s here.
            for attempt in range(1, 5):
                d.get(base)
                try: _wait(rendered, timeout=90, what='the explorer to render'); break
                except TimeoutError:
                    d.save_screenshot(str(ARTIFACTS/f'widgets_voila_stalled{attempt}.png'))
                    (ARTIFACTS/f'widgets_voila_stalled{attempt}.txt').write_text(d.find_element(By.TAG_NAME, 'body').text)
                    voila_diagnose(proc, ARTIFACTS/f'widgets_voila_stalled{attempt}_ps.txt')   # process table; kernel stacks go to voila.log
            else: raise TimeoutError('the explorer did not render in 4 page loads (see tests/artifacts/widgets_voila_stalled*, voila.log)')
            cfg0, _, ok = numbers_of(readout())
            assert ok and cfg0 == res.targets().config.iloc[1], readout()          # opens at the 0.1 pp pick, with its exact numbers
            img0, text0 = pareto_src(), readout()
            # move the first exit's image-threshold slider with the keyboard, as a person would
            d.find_element(By.CSS_SELECTOR, '.mess-n-exits .noUi-handle')   # the controls are there
            handle = d.find_element(By.CSS_SELECTOR, '.mess-slot0-th_img .noUi-handle')
            handle.click()
            for _ in range(5): handle.send_keys(Keys.ARROW_LEFT)
            _wait(lambda: readout() != text0, what='the readout to change after the slider moved')
            cfg1, r1, ok = _wait(lambda: (lambda t: numbers_of(t) if numbers_of(t)[2] else None)(readout()), what='exact numbers after the move')
            assert cfg1.exits == cfg0.exits and cfg1.th_img != cfg0.th_img
            _wait(lambda: pareto_src() != img0, what='the Pareto plot to redraw')
            # press a target button: the controls and readouts snap to the search's pick
            d.find_element(By.CSS_SELECTOR, '.mess-target2').click()
            want = res.targets().config.iloc[2]
            _wait(lambda: want.name in readout(), what="the readout to show the search's 1 pp pick")
            assert numbers_of(readout())[2], readout()
            time.sleep(2)
            d.save_screenshot(str(ARTIFACTS/'widgets_voila.png'))
            severe = [l for l in d.get_log('browser') if l['level'] == 'SEVERE' and 'favicon' not in l['message']]
            assert not severe, severe
    finally: d.quit()
