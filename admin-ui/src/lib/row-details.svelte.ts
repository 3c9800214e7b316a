/**
 * One table row opened at a time, with the list its details load (a job's runs, an alert's
 * messages to channels, a delivery's attempts): opening a row loads them, opening it again closes
 * it, and a failure to load is shown in the row. A load that finishes after another row was opened
 * is dropped.
 */
export class RowDetails<T> {
  key = $state<string | null>(null);
  items = $state<T[] | undefined>(undefined);
  error = $state<string | undefined>(undefined);

  constructor(
    private readonly load: (key: string) => Promise<T[]>,
    private readonly describe: (err: unknown) => string,
  ) {}

  isOpen(key: string): boolean {
    return this.key === key;
  }

  async toggle(key: string): Promise<void> {
    if (this.key === key) {
      this.key = null;
      return;
    }
    await this.open(key);
  }

  /** Loads the row's details again if it is the open one (after an action changed them). */
  async refresh(key: string): Promise<void> {
    if (this.key === key) await this.open(key);
  }

  private async open(key: string): Promise<void> {
    this.key = key;
    this.items = undefined;
    this.error = undefined;
    try {
      const items = await this.load(key);
      if (this.key === key) this.items = items;
    } catch (err) {
      if (this.key === key) this.error = this.describe(err);
    }
  }
}
